/*
 * Guest for test_guest.py: CPU 0 and CPU 1 each run ROUNDS `lock inc` on one
 * shared counter (TOTAL), then set their own DONE flag.  Under
 * -accel tcg,thread=single the total is exact; under thread=multi Unicorn's
 * `lock` is not atomic across vCPUs, which is what the README's note measures.
 */
        .intel_syntax noprefix
        .code64
        .set LAPIC,  0xfee00000
        .set TOTAL,  0x2ff100
        .set DONE,   0x2ff110
        .set ROUNDS, 1000000

        .text
        .globl _start
_start:
        mov     rax, LAPIC
        mov     dword ptr [rax + 0x310], 1 << 24
        mov     dword ptr [rax + 0x300], 0x4500         /* INIT */
        mov     dword ptr [rax + 0x310], 1 << 24
        mov     dword ptr [rax + 0x300], 0x4611         /* STARTUP, vector 0x11 */
        jmp     count

        .org    0x1000
ap_entry:
count:
        mov     rbx, TOTAL
        mov     ecx, ROUNDS
1:      lock inc qword ptr [rbx]
        dec     ecx
        jnz     1b
        mov     qword ptr [rsi * 8 + DONE], 1
2:      hlt
        jmp     2b
