/*
 * Guest for test_guest.py, with no IDT: misbehaves the first time it runs, in
 * the way selected with `as --defsym KIND=n` (0 invalid opcode, 1 read of
 * unassigned memory, 2 breakpoint, 3 divide error, 4 a sweep through
 * unassigned memory, 5 a pvpanic panic, 6 a pvpanic "crash kernel loaded",
 * 7 a reset through port 0xCF9, 8 the keyboard controller's reset pulse).
 * Without an IDT, 0, 2 and 3 are triple faults (the machine resets); 1 reads
 * 0 and goes on to halt; 4 exhausts qmpd's bound on unassigned pages.  A flag in RAM (kept across resets) makes the second
 * boot print "recovered" on debugcon and halt instead.
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
.elseif KIND == 5
        mov     al, 1
        mov     dx, 0x505
        out     dx, al
.elseif KIND == 6
        mov     al, 2
        mov     dx, 0x505
        out     dx, al
.elseif KIND == 7
        mov     al, 6
        mov     dx, 0xcf9
        out     dx, al
.elseif KIND == 8
        mov     al, 0xfe
        out     0x64, al
.elseif KIND == 4
        mov     rax, 0x4000000000
1:      mov     rcx, [rax]
        add     rax, 0x1000
        jmp     1b
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
