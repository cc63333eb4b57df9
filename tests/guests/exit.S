/* Guest for test_guest.py: writes 0x2a to isa-debug-exit at port 0xf4 (exit status 0x2a << 1 | 1 = 85). */
        .intel_syntax noprefix
        .code64
        .text
        .globl _start
_start:
        mov     al, 0x2a
        out     0xf4, al
1:      hlt
        jmp     1b
