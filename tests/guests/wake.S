/*
 * Guest for test_guest.py: HLT parks a CPU and an IPI wakes it.  CPU 1 loops
 * on `hlt; inc WAKES`.  The boot CPU sends it ROUNDS fixed IPIs, each time
 * waiting until WAKES has caught up, then reports on debugcon and halts.
 */
        .intel_syntax noprefix
        .code64
        .set LAPIC,  0xfee00000
        .set WAKES,  0x2ff000
        .set READY,  0x2ff008
        .set ROUNDS, 200

        .text
        .globl _start
_start:
        mov     rbx, LAPIC
        mov     r8, WAKES
        mov     dword ptr [rbx + 0x310], 1 << 24
        mov     dword ptr [rbx + 0x300], 0x4500         /* INIT */
        mov     dword ptr [rbx + 0x310], 1 << 24
        mov     dword ptr [rbx + 0x300], 0x4611         /* STARTUP, vector 0x11 */
0:      pause
        cmp     qword ptr [r8 + 8], 0                   /* READY: CPU 1 is up */
        je      0b
        xor     r9d, r9d
1:      inc     r9
        mov     dword ptr [rbx + 0x310], 1 << 24
        mov     dword ptr [rbx + 0x300], 0x40           /* fixed interrupt, vector 0x40 */
2:      pause
        cmp     [r8], r9
        jb      2b
        cmp     r9, ROUNDS
        jb      1b
        lea     rsi, [rip + message]
3:      lodsb
        test    al, al
        jz      4f
        out     0xe9, al
        jmp     3b
4:      hlt
        jmp     4b
message:
        .asciz  "woken 200 times\n"

        .org    0x1000
ap_entry:
        mov     r8, WAKES
        mov     qword ptr [r8 + 8], 1                   /* READY */
5:      hlt
        inc     qword ptr [r8]
        jmp     5b
