/*
 * NMI and keyboard, included by qmpd-firmware.S (the boot CPU's payload, 64-bit code).
 *
 * NMI: every CPU loads a GDT of its own making (qmpd starts CPUs in long mode
 * with none, and `iretq` needs one to reload CS and SS), unmasks LINT1 of its
 * local APIC with delivery mode NMI (QEMU's inject-nmi raises LINT1, as
 * SeaBIOS programs it) and finds an interrupt gate for vector 2 in the shared
 * IDT.  The handler counts the NMI for its CPU and returns with iretq; the
 * boot CPU prints one "CPU n (APIC ID m) NMI" line per NMI taken, so lines
 * never interleave.
 *
 * Keyboard: the boot CPU sets the i8042's command byte to translate the
 * keyboard's scancode set 2 into set 1 (as SeaBIOS does; no IRQs, mouse port
 * off), then polls the status port's output-buffer-full bit from its main
 * loop and prints every byte it reads from the data port as "kbd xx".  Polling
 * works the same on QEMU (where the i8042 would raise IRQ1 through the PIC)
 * and on qmpd.
 */
        .set NMI_COUNT,    0x300000             /* NMIs taken, by APIC ID (8 bytes each) */
        .set NMI_SEEN,     0x302000             /* NMIs reported by the boot CPU, by APIC ID */
        .set NMI_FLAG,     0x304000             /* set by a CPU that took an NMI */
        .set LAPIC_SVR,    0xf0
        .set LAPIC_LINT1,  0x360
        .set LVT_NMI,      0x400                /* unmasked, delivery mode NMI */
        .set KBD_DATA,     0x60
        .set KBD_STATUS,   0x64
        .set KBD_OBF,      0x01
        .set KBD_WRITE_MODE, 0x60
        .set KBD_MODE,     0x60                 /* translate to set 1, mouse port off, no IRQs */

/* Boot CPU, once its IDT is loaded: the NMI gate, the i8042, then what every CPU does. */
input_setup_boot:
        lea     rax, [rip + nmi_handler]
        mov     edi, IDT + 2 * 16
        mov     [rdi], ax                       /* offset 15:0 */
        mov     word ptr [rdi + 2], SEL_CODE64
        mov     word ptr [rdi + 4], 0x8e00      /* present, DPL 0, 64-bit interrupt gate */
        shr     rax, 16
        mov     [rdi + 6], ax                   /* offset 31:16 */
        shr     rax, 16
        mov     [rdi + 8], eax                  /* offset 63:32 */
        mov     dword ptr [rdi + 12], 0
        mov     al, KBD_WRITE_MODE
        out     KBD_STATUS, al
        mov     al, KBD_MODE
        out     KBD_DATA, al
        /* fall through */

/* Every CPU: its GDT, CS and data segments; its local APIC enabled with LINT1 as NMI. Clobbers rax. */
input_setup_cpu:
        lgdt    [rip + gdt64_descriptor]
        push    SEL_CODE64
        lea     rax, [rip + 1f]
        push    rax
        retfq
1:      mov     ax, SEL_DATA
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        mov     eax, LAPIC
        mov     dword ptr [rax + LAPIC_SVR], 0x1ff
        mov     dword ptr [rax + LAPIC_LINT1], LVT_NMI
        ret

/* Any CPU: count the NMI (r12 = APIC ID everywhere in this firmware) and go back. */
nmi_handler:
        inc     qword ptr [r12 * 8 + NMI_COUNT]
        mov     qword ptr [NMI_FLAG], 1
        iretq

/* Boot CPU, from its main loop: report new NMIs, echo keyboard bytes. Clobbers rax, rdx, rsi, r8, r9. */
input_poll:
        cmp     qword ptr [NMI_FLAG], 0
        je      53f
        mov     qword ptr [NMI_FLAG], 0         /* cleared before the scan: a later NMI sets it again */
        push    rbx
        xor     ebx, ebx
50:     mov     rax, [rbx * 8 + NMI_SEEN]
        cmp     rax, [rbx * 8 + NMI_COUNT]
        je      51f
        inc     qword ptr [rbx * 8 + NMI_SEEN]
        mov     r8, [rbx * 8 + CPU_INDEX]
        mov     r9, rbx
        lea     rsi, [rip + msg_nmi]
        call    cpu_line
        jmp     50b
51:     inc     ebx
        cmp     ebx, MAX_CPUS
        jb      50b
        pop     rbx
53:     in      al, KBD_STATUS
        test    al, KBD_OBF
        jz      55f
        in      al, KBD_DATA
        mov     dl, al
        lea     rsi, [rip + msg_kbd]
        call    puts
        mov     al, dl
        shr     al, 4
        call    hex_digit
        mov     al, dl
        call    hex_digit
        mov     al, '\n'
        out     DEBUGCON, al
        jmp     53b
55:     ret

/* the low nibble of al, in hex, on the debug console */
hex_digit:
        and     al, 15
        add     al, '0'
        cmp     al, '9'
        jbe     56f
        add     al, 'a' - '9' - 1
56:     out     DEBUGCON, al
        ret

msg_nmi:    .asciz ") NMI\n"
msg_kbd:    .asciz "qmpd firmware: kbd "
        .balign 8
gdt64_descriptor:
        .word   gdt_end - gdt - 1
        .quad   gdt
