/*
 * Guest for test_hotplug.py: QEMU's observed ACPI CPU hot-plug register
 * sequence (qemu-facts.md section 3), driven from inside the guest.  Every
 * value read is stored at RESULTS (8 bytes each, in order); STEP tells the
 * test how far the guest got, and the test answers with device_add and
 * device_del between the steps.  Boot protocol: RDX = hot-plug block base,
 * RCX = GPE0 base.
 */
        .intel_syntax noprefix
        .code64
        .set RESULTS, 0x300000
        .set STEP,    0x2ff000

        .text
        .globl _start
_start:
        mov     r14, rdx                        /* hot-plug block base */
        mov     r15, rcx                        /* GPE0 base */
        mov     rdi, RESULTS
        /* legacy bitmap, byte 0 */
        mov     dx, r14w
        in      al, dx
        call    record
        /* switch to the modern interface, forget the legacy plug's GPE */
        xor     eax, eax
        out     dx, al
        mov     dx, r15w
        mov     ax, 4
        out     dx, ax
        /* slots 0..4: flags, arch ID low, arch ID high */
        xor     ebx, ebx
1:      call    select
        mov     dx, r14w
        add     dx, 5
        mov     al, 3
        out     dx, al                          /* command 3: arch ID */
        sub     dx, 1
        in      al, dx
        movzx   eax, al
        call    record                          /* flags */
        add     dx, 4
        in      eax, dx
        call    record                          /* arch ID low */
        mov     dx, r14w
        in      eax, dx
        call    record                          /* arch ID high */
        inc     ebx
        cmp     ebx, 5
        jb      1b
        mov     qword ptr [STEP], 1             /* test: device_add slot 1 */
        /* wait for the GPE0 CPU hot-plug status bit */
2:      pause
        mov     dx, r15w
        in      ax, dx
        test    ax, 4
        jz      2b
        movzx   eax, ax
        call    record                          /* GPE0 status */
        /* command 0 from selector 0: the slot with an event */
        xor     ebx, ebx
        call    select
        call    scan
        call    record                          /* flags */
        mov     eax, esi
        call    record                          /* selector found */
        mov     dx, r14w
        add     dx, 4
        mov     al, 2
        out     dx, al                          /* clear insert */
        in      al, dx
        movzx   eax, al
        call    record                          /* flags after */
        mov     ebx, 1
        mov     r8d, 1
        xor     r9d, r9d
        call    ost                             /* _OST(insert, success) */
        mov     dx, r15w
        mov     ax, 4
        out     dx, ax                          /* acknowledge the GPE */
        mov     qword ptr [STEP], 2             /* test: device_del */
        /* wait for the remove event */
3:      pause
        xor     ebx, ebx
        call    select
        call    scan
        test    al, 4
        jz      3b
        call    record                          /* flags */
        mov     eax, esi
        call    record                          /* selector found */
        mov     dx, r14w
        add     dx, 4
        mov     al, 4
        out     dx, al                          /* clear remove */
        mov     ebx, 1
        mov     r8d, 3
        mov     r9d, 0x84
        call    ost                             /* _OST(eject, in progress) */
        mov     ebx, 1
        call    select
        mov     dx, r14w
        add     dx, 4
        mov     al, 8
        out     dx, al                          /* eject */
        in      al, dx
        movzx   eax, al
        call    record                          /* flags after the eject */
        xor     ebx, ebx
        call    select
        mov     dx, r14w
        add     dx, 4
        mov     al, 8
        out     dx, al                          /* eject the boot CPU: ignored */
        in      al, dx
        movzx   eax, al
        call    record                          /* its flags */
        mov     qword ptr [STEP], 3
4:      hlt
        jmp     4b

/* rax -> RESULTS[n++] */
record: mov     [rdi], rax
        add     rdi, 8
        ret

/* selector = ebx */
select: mov     dx, r14w
        mov     eax, ebx
        out     dx, eax
        ret

/* command 0; returns flags in eax, the selector in esi */
scan:   mov     dx, r14w
        add     dx, 5
        xor     eax, eax
        out     dx, al
        add     dx, 3
        in      eax, dx
        mov     esi, eax
        mov     ebx, eax
        call    select
        mov     dx, r14w
        add     dx, 4
        in      al, dx
        movzx   eax, al
        ret

/* _OST for slot ebx: event r8d, status r9d */
ost:    call    select
        mov     dx, r14w
        add     dx, 5
        mov     al, 1
        out     dx, al
        add     dx, 3
        mov     eax, r8d
        out     dx, eax
        sub     dx, 3
        mov     al, 2
        out     dx, al
        add     dx, 3
        mov     eax, r9d
        out     dx, eax
        ret
