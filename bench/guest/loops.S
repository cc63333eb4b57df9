/*
 * bench/guest_bench.py's guest: one of three loop bodies, run by one or two CPUs,
 * then an exit through isa-debug-exit (port 0xf4, value 0 -> process status 1).
 *
 * A flat 64-bit image for qmpd's boot protocol: loaded at 0x10000, the boot CPU
 * starts there in 64-bit flat mode (RDI = cpu index, RSP = a stack); an AP started
 * with STARTUP vector 0x11 begins at 0x11000 (the .org 0x1000 below).  The same
 * image runs under raw Unicorn (one CPU) and, copied to 0x10000 by bios64k.S,
 * under QEMU.
 *
 * Assemble with --defsym:
 *   LOOP   0: dec ecx; jnz                                       (2 insns/iteration)
 *          1: add eax, ebx; xor edx, eax; inc esi; dec ecx; jnz  (5 insns/iteration)
 *          2: mov [rbx], ax; add dx, [rbx]; add rbx, 2;
 *             and ebx, r9d; dec ecx; jnz                          (6 insns/iteration)
 *             (the `and` keeps rbx inside a 4 KiB buffer per CPU)
 *   ITERS  iterations per CPU (>= 1; rcx instead of ecx above 2^32 - 1)
 *   NCPUS  1, or 2: CPU 0 starts CPU 1 (APIC ID 1), both run the loop, CPU 1 sets
 *          DONE, CPU 0 waits for it and exits.
 */
        .intel_syntax noprefix
        .code64

        .set LAPIC,      0xfee00000
        .set ICR_LOW,    0x300
        .set ICR_HIGH,   0x310
        .set AP_VECTOR,  0x11
        .set EXIT_PORT,  0xf4
        .set DONE,       0x200000        /* CPU 1 writes 1 here after its loop */
        .set BUF,        0x100000        /* loop C: 4 KiB per CPU, 8 KiB apart */

        .text
        .globl _start
/* ---------------------------------------------------------------- boot CPU */
_start:
        mov     qword ptr [DONE], 0
.if NCPUS > 1
        mov     ebx, LAPIC
        mov     dword ptr [rbx + ICR_HIGH], 1 << 24
        mov     dword ptr [rbx + ICR_LOW], 0x4500               /* INIT */
        mov     dword ptr [rbx + ICR_HIGH], 1 << 24
        mov     dword ptr [rbx + ICR_LOW], 0x4600 | AP_VECTOR   /* STARTUP */
.endif
        call    run_loop
.if NCPUS > 1
1:      pause
        cmp     qword ptr [DONE], 1
        jne     1b
.endif
        xor     eax, eax
        out     EXIT_PORT, eax
2:      hlt
        jmp     2b

/* rdi = cpu index: run the loop ITERS times */
run_loop:
        xor     eax, eax
        mov     ebx, 1
        xor     edx, edx
        xor     esi, esi
.if LOOP == 2
        mov     ebx, edi
        shl     ebx, 13
        add     ebx, BUF
        lea     r9d, [rbx + 0xffe]
.endif
.if ITERS > 0xffffffff
        mov     rcx, ITERS
.else
        mov     ecx, ITERS
.endif
        .p2align 4
3:
.if LOOP == 1
        add     eax, ebx
        xor     edx, eax
        inc     esi
.elseif LOOP == 2
        mov     [rbx], ax
        add     dx, [rbx]
        add     rbx, 2
        and     ebx, r9d
.endif
.if ITERS > 0xffffffff
        dec     rcx
.else
        dec     ecx
.endif
        jnz     3b
        ret

/* ---------------------------------------------------------------- CPU 1 */
        .org    0x1000
ap_entry:
        call    run_loop
        mov     qword ptr [DONE], 1
4:      hlt
        jmp     4b
