/*
 * Guest for test_guest.py: every CPU executes CPUID for each (leaf, subleaf)
 * listed in leaves.inc (written by the test) and stores EAX, EBX, ECX, EDX
 * at RESULTS + APIC ID * 4096, 16 bytes per query, then sets DONE[APIC ID].
 * The boot CPU starts CPU 1 (APIC ID 1) with INIT + STARTUP (vector 0x11).
 */
        .intel_syntax noprefix
        .code64
        .set LAPIC,   0xfee00000
        .set RESULTS, 0x300000
        .set DONE,    0x2ff000

        .text
        .globl _start
_start:
        call    probe
        mov     rax, LAPIC
        mov     dword ptr [rax + 0x310], 1 << 24
        mov     dword ptr [rax + 0x300], 0x4500         /* INIT */
        mov     dword ptr [rax + 0x310], 1 << 24
        mov     dword ptr [rax + 0x300], 0x4611         /* STARTUP, vector 0x11 */
park:   hlt
        jmp     park

        .org    0x1000
ap_entry:
        call    probe
        jmp     park

probe:
        mov     rdi, rsi
        shl     rdi, 12
        add     rdi, RESULTS
        lea     r8, [rip + leaves]
1:      mov     eax, [r8]
        mov     ecx, [r8 + 4]
        cmp     eax, 0xffffffff
        je      2f
        cpuid
        mov     [rdi], eax
        mov     [rdi + 4], ebx
        mov     [rdi + 8], ecx
        mov     [rdi + 12], edx
        add     rdi, 16
        add     r8, 8
        jmp     1b
2:      mov     qword ptr [rsi * 8 + DONE], 1
        ret

leaves:
        .include "leaves.inc"
        .long   0xffffffff, 0
