/*
 * The `idle` work mode (WORK_MODE = 1, from `-fw_cfg name=opt/qmpd/work,string=idle`,
 * fwcfg.S): after its banner a CPU halts instead
 * of counting, and wakes for an interrupt: an IPI, or the SCI of a CPU
 * hot-plug event or of the power button.  Included by qmpd-firmware.S.
 *
 * One mechanism for both emulators, the one a PC has: the SCI is GSI 9 of
 * the I/O APIC (0xFEC00000).  The boot CPU routes pin 9 to itself (edge,
 * vector WAKE_VECTOR), enables the hot-plug bit of GPE0_EN, and every CPU
 * software-enables its local APIC (SVR).  A waiting CPU runs
 *     cli; <look for work>; sti; hlt
 * so an interrupt that comes while it looks is delivered right after the
 * `sti` and ends the `hlt`.  The interrupt handler only signals EOI: the work
 * is done by the loop, so a machine that ends the `hlt` without vectoring
 * through the IDT (qmpd) runs the very same code.  The SCI pin is edge
 * triggered because the loop, not the handler, clears the GPE status: the
 * next event raises the line again.  A CPU asked to park (unplug) is sent a
 * fixed IPI with WAKE_VECTOR by the boot CPU; a CPU that takes an exception
 * sends one to the boot CPU, which reports it; a CPU that has come up sends
 * one to the boot CPU, which halts while it waits instead of spinning (on a
 * busy host a spinning boot CPU takes the time the new CPU needs to start).
 * A CPU that took an NMI (input.S) wakes the boot CPU, which reports it; the
 * keyboard raises no interrupt (input.S polls it), so its bytes are echoed
 * when the boot CPU next wakes.
 */
        .set IOAPIC,        0xfec00000
        .set IOREGSEL,      0x00
        .set IOWIN,         0x10
        .set SCI_GSI,       9
        .set WAKE_VECTOR,   0x30
        .set SPURIOUS,      0xff
        .set APIC_SVR,      0xf0
        .set APIC_EOI,      0xb0

/* Boot CPU, before it starts other CPUs: its APIC ID for their IPIs, its local APIC, the gates. */
idle_prepare:
        mov     [rip + boot_apic_id], r12d
        call    lapic_enable
        jmp     idle_gates

/* r12 = APIC ID, r13 = cpu index: the boot CPU waits for events, the others for a park request. */
idle:
        test    r13, r13
        jnz     idle_cpu
        test    r14, r14
        jz      52f
        call    route_sci
52:     cli
        cmp     qword ptr [FAULTS_PENDING], 0
        je      53f
        call    report_exceptions
53:     call    input_poll                      /* input.S: NMIs taken, keyboard bytes */
        test    r14, r14
        jz      54f
        mov     dx, PM1_STS                     /* the power button pressed? */
        in      ax, dx
        test    ax, PWRBTN
        jnz     power_off
        mov     dx, r15w                        /* GPE0 status: a CPU hot-plug event pending? */
        in      ax, dx
        test    al, GPE_CPU_HOTPLUG
        jz      54f
        mov     ax, GPE_CPU_HOTPLUG
        out     dx, ax                          /* acknowledge it (the SCI line falls), then handle every event */
        call    hotplug_events
        jmp     52b
54:     sti
        hlt
        jmp     52b

/* Not the boot CPU: tell the boot CPU it is up, then halt until asked to park. */
idle_cpu:
        call    lapic_enable
        mov     eax, [rip + boot_apic_id]
        call    wake_cpu
55:     cli
        cmp     qword ptr [r12 * 8 + STATE], 2
        je      park
        cmp     qword ptr [NMI_FLAG], 0         /* it took an NMI (input.S): the boot CPU reports it */
        je      57f
        mov     eax, [rip + boot_apic_id]
        call    wake_cpu
57:     sti
        hlt
        jmp     55b

/* Software-enable this CPU's local APIC, spurious vector SPURIOUS. */
lapic_enable:
        mov     eax, LAPIC
        mov     dword ptr [rax + APIC_SVR], 0x100 | SPURIOUS
        ret

/* Boot CPU: interrupt gates for WAKE_VECTOR and the spurious vector in the shared IDT. */
idle_gates:
        lea     rax, [rip + wake_interrupt]
        mov     edi, IDT + WAKE_VECTOR * 16
        call    set_gate
        lea     rax, [rip + spurious_interrupt]
        mov     edi, IDT + SPURIOUS * 16
        /* fall through */
/* rax = handler, rdi = its gate */
set_gate:
        mov     [rdi], ax
        mov     word ptr [rdi + 2], SEL_CODE64
        mov     word ptr [rdi + 4], 0x8e00      /* present, DPL 0, 64-bit interrupt gate */
        shr     rax, 16
        mov     [rdi + 6], ax
        shr     rax, 16
        mov     [rdi + 8], eax
        mov     dword ptr [rdi + 12], 0
        ret

/* Boot CPU: the SCI (I/O APIC pin SCI_GSI) to this CPU, and the CPU hot-plug GPE enabled. */
route_sci:
        mov     eax, IOAPIC
        mov     dword ptr [rax + IOREGSEL], 0x10 + 2 * SCI_GSI + 1
        mov     ecx, r12d
        shl     ecx, 24                         /* physical destination: this APIC ID */
        mov     [rax + IOWIN], ecx
        mov     dword ptr [rax + IOREGSEL], 0x10 + 2 * SCI_GSI
        mov     dword ptr [rax + IOWIN], WAKE_VECTOR   /* fixed, physical, active high, edge, unmasked */
        mov     dx, r15w                        /* GPE0_EN is the second half of the GPE0 block */
        add     dx, 2                           /* pc: 4 bytes */
        cmp     r14w, 0xaf00
        je      56f
        add     dx, 6                           /* q35: 16 bytes */
56:     mov     ax, GPE_CPU_HOTPLUG
        out     dx, ax
        ret

/* eax = APIC ID: a fixed IPI with WAKE_VECTOR (ends its hlt). */
wake_cpu:
        push    rcx
        call    icr_high
        mov     ecx, LAPIC
        mov     [rcx + ICR_HIGH], eax
        mov     dword ptr [rcx + ICR_LOW], WAKE_VECTOR
        pop     rcx
        ret

wake_interrupt:
        push    rax
        mov     eax, LAPIC
        mov     dword ptr [rax + APIC_EOI], 0
        pop     rax
        iretq

spurious_interrupt:
        iretq

        .balign 4
boot_apic_id:
        .long   0
