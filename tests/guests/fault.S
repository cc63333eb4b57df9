/*
 * Guest for test_guest.py: crashes the first time it runs, in the way
 * selected with `as --defsym KIND=n` (0 invalid opcode, 1 read of unmapped
 * memory, 2 breakpoint with no handler, 3 divide error with no handler).
 * A flag in RAM (kept across system_reset) makes the second boot print
 * "recovered" on debugcon and halt instead.
 */
        .intel_syntax noprefix
        .code64
        .set FLAG, 0x2ff000

        .text
        .globl _start
_start:
        mov     rbx, FLAG
        cmp     qword ptr [rbx], 0
        jne     recovered
        mov     qword ptr [rbx], 1
        mov     al, 'F'
        out     0xe9, al
        mov     al, '\n'
        out     0xe9, al
.if KIND == 0
        ud2
.elseif KIND == 1
        mov     rax, 0x40000000
        mov     rax, [rax]
.elseif KIND == 2
        int3
.else
        xor     ecx, ecx
        div     ecx
.endif
        jmp     halt

recovered:
        lea     rsi, [rip + message]
1:      lodsb
        test    al, al
        jz      halt
        out     0xe9, al
        jmp     1b
halt:   hlt
        jmp     halt

message:
        .asciz  "recovered\n"
