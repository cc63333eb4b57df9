/*
 * bench/guest_bench.py's QEMU firmware: a 64 KiB -bios image that switches from
 * real mode to long mode, copies loops.S's flat image (image.bin, found with
 * `as -I DIR`) to 0x10000 and jumps to it as qmpd would: CPU 0, RDI = RSI = 0,
 * a stack below 0xA0000.
 *
 * Reset (F000:FFF0, offset 0xFFF0) -> real mode at F000:0000 -> protected mode
 * (flat GDT) -> PAE, page tables at 0x1000-0x3FFF identity-mapping the first 1 GiB
 * with 2 MiB pages, EFER.LME, CR0.PG -> far jump to a 64-bit code segment.
 * Linked at 0xF0000, where QEMU maps the last 128 KiB of the BIOS image.
 */
        .set CODE32, 0x08
        .set DATA,   0x10
        .set CODE64, 0x18
        .set PML4,   0x1000
        .set PDPT,   0x2000
        .set PD,     0x3000
        .set IMAGE,  0x10000
        .set STACK,  0x90000
        .set EFER,   0xc0000080

        .text
        .globl _start
        .code16
_start:
        cli
        cld
        lgdtl   %cs:(gdt_desc - _start)
        movl    %cr0, %eax
        orl     $1, %eax                        /* PE */
        movl    %eax, %cr0
        ljmpl   $CODE32, $pm32

        .code32
pm32:
        movl    $DATA, %eax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        movl    $PML4, %edi                     /* zero the three table pages */
        xorl    %eax, %eax
        movl    $(3 * 4096 / 4), %ecx
        rep stosl
        movl    $(PDPT | 3), PML4
        movl    $(PD | 3), PDPT
        movl    $PD, %edi                       /* 512 x 2 MiB: present, writable, large */
        movl    $0x83, %eax
        movl    $512, %ecx
1:      movl    %eax, (%edi)
        addl    $0x200000, %eax
        addl    $8, %edi
        loop    1b
        movl    %cr4, %eax
        orl     $0x20, %eax                     /* PAE */
        movl    %eax, %cr4
        movl    $PML4, %eax
        movl    %eax, %cr3
        movl    $EFER, %ecx
        rdmsr
        orl     $0x100, %eax                    /* LME */
        wrmsr
        movl    %cr0, %eax
        orl     $0x80000000, %eax               /* PG */
        movl    %eax, %cr0
        ljmpl   $CODE64, $lm64

        .code64
lm64:
        leaq    image(%rip), %rsi
        movl    $IMAGE, %edi
        movl    $(image_end - image), %ecx
        rep movsb
        movl    $STACK, %esp
        xorl    %edi, %edi
        xorl    %esi, %esi
        movl    $IMAGE, %eax
        jmp     *%rax

        .p2align 3
gdt:
        .quad   0
        .quad   0x00cf9b000000ffff              /* 0x08: 32-bit code, flat */
        .quad   0x00cf93000000ffff              /* 0x10: data, flat */
        .quad   0x00af9b000000ffff              /* 0x18: 64-bit code */
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt

image:
        .incbin "image.bin"
image_end:

        .org    0xfff0
        .code16
reset:
        ljmp    $0xf000, $(_start - _start)
        .org    0x10000
