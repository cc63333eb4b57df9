/*
 * qmpd's default firmware: brings every CPU up, gives each a counter to
 * drive, and answers CPU hot-plug the way QEMU's ACPI code (AML) does.
 *
 * One image for qmpd and for qemu-system-x86_64 -bios (pc and q35, TCG): a
 * 64 KiB PC BIOS ROM.  Its layout (qmpd-firmware.ld):
 *   0x0000  the 64-bit payload, linked to run at 0x10000: the boot CPU's
 *           entry _start at 0x10000, the other CPUs' entry at 0x11000 (the
 *           target of a STARTUP IPI with vector 0x11)
 *   0xF000  the real-mode boot stub
 *   0xFFF0  the reset vector: a far jump to the stub
 * On QEMU the boot CPU starts at the reset vector in real mode; the stub
 * copies the payload to 0x10000 and jumps to the CPU entry at 0x11000, which
 * enters protected mode, builds identity page tables for the first 4 GiB
 * (2 MiB pages), enters long mode and goes on at _start.  Other CPUs start
 * there in real mode after INIT and STARTUP, and take the same way into long
 * mode.  qmpd cannot run 16-bit code: it loads the image at 0x10000 and starts
 * the boot CPU at _start in 64-bit mode, and a STARTUP IPI starts a CPU at
 * vector x 4096 in 64-bit mode.  The first bytes at 0x11000 decode as a jump
 * to the 16-bit trampoline in real mode and as a jump to the 64-bit entry in
 * long mode, so one page serves both.
 *
 * Options come from fw_cfg (fwcfg.S): `-fw_cfg name=opt/qmpd/work,string=idle`
 * sets WORK_MODE, on either emulator.
 *
 * The firmware finds the machine as firmware does on QEMU, whatever it was
 * started with: its APIC ID through CPUID (leaf 0xB, else leaf 1), the
 * chipset through PCI configuration space (ports 0xCF8/0xCFC: the i440FX or
 * Q35 host bridge), the PM base it programs into the PIIX4 PM function
 * (00:01.3) or the ICH9 LPC bridge (00:1f.0), and the CPU hot-plug block and
 * GPE0 block at the ports QEMU 7.2 puts them on each chipset.  Each CPU's
 * stack is its own 4 KiB at STACKS + 4 KiB x APIC ID.
 *
 * Per CPU, indexed by APIC ID (8 bytes each, 1024 entries):
 *   COUNTERS  incremented with a read-modify-write `inc [mem]`
 *   SHADOW    incremented with a separate load, inc and store
 *   STATE     0 off, 1 online, 2 asked to park, 3 parked,
 *             4 stopped by an exception, 5 the same, reported
 * COUNTERS and SHADOW stay equal unless an instruction ran twice or not at
 * all, which is how the tests check that pausing loses or doubles nothing.
 *
 * Exceptions: every CPU loads one IDT whose 32 exception gates lead to a
 * handler that records the vector, marks the CPU stopped (4) and halts it for
 * good; the boot CPU prints "CPU n (APIC ID m) exception v".  The other CPUs
 * go on.  A CPU asked to park that has not parked after PARK_TIMEOUT polls is
 * stopped with an INIT IPI before it is ejected, so a stuck CPU can still be
 * unplugged.
 *
 * Test variants (`as --defsym FAULT=k`, FAULT_APIC, FAULT_AFTER): after
 * FAULT_AFTER iterations the CPU with APIC ID FAULT_APIC does, for k =
 *   1 ud2                 4 a tight loop with interrupts off, forever
 *   2 unassigned r/w      5 keep working but never park when asked
 *   3 triple fault, once  6 jump to unassigned memory
 *
 * Start-up: once the hot-plug block is modern, the boot CPU starts the CPUs
 * that are present without an event, then handles every pending event (a CPU
 * plugged while it was booting, or under -S) as it would at run time, so each
 * plug gets its _OST whenever it happened.
 *
 * Power button: with ACPI, the boot CPU enables PWRBTN_EN in PM1_EN and, when
 * system_powerdown sets PWRBTN_STS, enters soft-off (S5): SLP_TYP 0 and
 * SLP_EN written to PM1_CNT, as an OS does after its ACPI _S5 method.
 *
 * Work modes (the byte at WORK_MODE, read from fw_cfg): 0 count, the loop
 * above; 1 idle, every CPU halts after its banner and wakes for interrupts
 * (idle.S).
 * NMI and keyboard (input.S): every CPU takes an NMI through vector 2 and
 * goes on; the boot CPU reports each as "CPU n (APIC ID m) NMI" and echoes
 * every byte it reads from the i8042 as "kbd xx".
 *
 * Output goes to the debug console (port 0xe9), one line per event, all of
 * it printed by the boot CPU so that lines never interleave.
 */
        .intel_syntax noprefix
        .code64

        .set DEBUGCON,   0xe9
        .set LAPIC,      0xfee00000
        .set ICR_LOW,    0x300
        .set ICR_HIGH,   0x310
        .set COUNTERS,   0x200000
        .set SHADOW,     0x202000
        .set STATE,      0x204000
        .set FAULT_VECTOR, 0x206000
        .set FAULT_CPU,    0x208000
        .set IDT,          0x20a000
        .set FAULTS_PENDING, 0x20b000           /* set by a CPU that took an exception */
        .set TRIPLE_DONE,  0x20b008             /* variant 3: survives the reset */
        .set UNASSIGNED_RESULT, 0x20b010        /* variant 2: what it read back, plus one */
        .set CPU_INDEX,    0x20c000             /* cpu index by APIC ID, written before STARTUP */
        .set STARTED,      0x20e000             /* hotplug_events: CPUs started, not yet reported */
        .set STACKS,       0x400000             /* 4 KiB per APIC ID, up to 0x800000 */
        .set STACK_SIZE,   0x1000
        /* mode switch (QEMU only): page tables and the boot flag below 1 MiB */
        .set PML4,         0x1000               /* PDPT at 0x2000, four page directories at 0x3000 */
        .set BOOT_FLAG,    0x9000               /* set by the stub: the next CPU into long mode boots */
        .set BOOT_STACK,   0x8000               /* the boot CPU's stack while it builds them */
        .set SEL_CODE32,   0x08
        .set SEL_DATA,     0x10
        .set SEL_CODE64,   0x18
        /* PCI configuration space and the chipsets QEMU emulates */
        .set PCI_ADDRESS,  0xcf8
        .set PCI_DATA,     0xcfc
        .set I440FX,       0x12378086           /* device:vendor of 00:00.0 on pc */
        .set Q35_MCH,      0x29c08086           /* on q35 */
        .set PIIX4_PM,     0x71138086           /* 00:01.3 */
        .set ICH9_LPC,     0x29188086           /* 00:1f.0 */
        .set PM_BASE,      0x600
        .set STOPPED,    4
        .set MAX_CPUS,   1024
        .set PARK_TIMEOUT, 0x1000000
        .ifndef FAULT
        .set FAULT, 0
        .endif
        .ifndef FAULT_APIC
        .set FAULT_APIC, 1
        .endif
        .ifndef FAULT_AFTER
        .set FAULT_AFTER, 0x2000
        .endif
        .set AP_VECTOR,  0x11
        /* ACPI CPU hot-plug block, modern interface */
        .set CPU_SEL,    0
        .set CPU_FLAGS,  4
        .set CPU_CMD,    5
        .set CPU_DATA,   8
        .set FLAG_ENABLED, 1
        .set FLAG_INSERT,  2
        .set FLAG_REMOVE,  4
        .set CMD_NEXT_EVENT, 0
        .set CMD_OST_EVENT,  1
        .set CMD_OST_STATUS, 2
        .set CMD_ARCH_ID,    3
        .set GPE_CPU_HOTPLUG,   4               /* GPE0 status bit QEMU sets */
        /* ACPI PM1 registers at the PM base the firmware programs */
        .set PM1_STS,    PM_BASE
        .set PM1_EN,     PM_BASE + 2
        .set PM1_CNT,    PM_BASE + 4
        .set PWRBTN,     0x100
        .set SLP_EN_S5,  0x2000                 /* SLP_EN, SLP_TYP 0: QEMU's _S5 */
        .set CTRL_CLEAR_INSERT, 2
        .set CTRL_CLEAR_REMOVE, 4
        .set CTRL_EJECT,        8
        /* _OST event/status codes (ACPI 6.x, table 6.xx) */
        .set OST_EVENT_INSERT, 1
        .set OST_EVENT_EJECT,  3
        .set OST_SUCCESS,      0
        .set OST_EJECT_DONE,   0x84

/* r12 = this CPU's APIC ID (CPUID), rsp = its stack; clobbers rax, rbx, rcx, rdx */
        .macro  identify
        xor     eax, eax
        cpuid
        cmp     eax, 0xb
        jb      91f
        mov     eax, 0xb                        /* x2APIC ID: wider than leaf 1's 8 bits */
        xor     ecx, ecx
        cpuid
        mov     r12d, edx
        jmp     92f
91:     mov     eax, 1
        cpuid
        shr     ebx, 24
        mov     r12d, ebx
92:     lea     rsp, [r12 * 8 + 0]
        shl     rsp, 9                          /* x 4096 */
        add     rsp, STACKS + STACK_SIZE
        .endm

        .text
        .globl _start
/* ---------------------------------------------------------------- boot CPU */
_start:
        identify
        xor     r13d, r13d                      /* the boot CPU is CPU 0 */
        call    find_chipset                    /* -> r14 hot-plug block (0: no ACPI), r15 GPE0 */
.ifdef PCI_DUMP
        call    dump_pci                        /* test variant: what a guest reads of PCI config space */
.endif
        call    build_idt
        lidt    [rip + idt_descriptor]
        call    input_setup_boot                /* input.S */
        lea     rsi, [rip + msg_hello]
        call    puts
        call    read_options                    /* fw_cfg: WORK_MODE (fwcfg.S) */
.ifdef FWCFG_DUMP
        call    dump_fwcfg                      /* test variant: what a guest reads of fw_cfg */
.endif
        cmp     byte ptr [WORK_MODE], 0
        je      26f
        call    idle_prepare                    /* idle.S: interrupts to wake this CPU */
26:     call    online_banner
        test    r14, r14
        jz      work
        mov     dx, PM1_EN                      /* let the power button raise PWRBTN_STS */
        mov     ax, PWRBTN
        out     dx, ax
        /* switch the hot-plug block to the modern interface */
        mov     dx, r14w
        xor     eax, eax
        out     dx, al
        /* acknowledge the hot-plug GPE: whatever is pending now is found by the scan below */
        mov     dx, r15w
        mov     ax, GPE_CPU_HOTPLUG
        out     dx, ax
        /* start every other CPU present from the start, one after the other */
        xor     ebx, ebx                        /* selector */
1:      call    select_slot
        test    al, FLAG_ENABLED
        jz      2f
        test    al, FLAG_INSERT                 /* plugged before we were up: handled as an event */
        jnz     2f
        call    arch_id                         /* -> eax */
        cmp     rax, r12
        je      2f
        call    start_cpu
2:      inc     ebx
        cmp     ebx, MAX_CPUS
        jb      1b
        /* like an OS enabling its GPE handler: handle every event already pending */
        call    hotplug_events
        jmp     work

/* ---------------------------------------------------------------- other CPUs */
        .org    0x1000
/* 0x11000: in real mode `mov ax, imm16` then a short jump to the trampoline; in long mode
   `mov eax, imm32` swallows that jump and the next instruction goes to ap_entry. */
cpu_entry:
        .byte   0xb8, 0x00, 0x00, 0xeb, trampoline16 - cpu_entry - 5
        jmp     ap_entry

        .set    TRAMPOLINE, 0x11000             /* CS base in real mode (segment 0x1100) */
        .code16
trampoline16:
        cli
        cld
        mov     ax, cs
        mov     ds, ax
        lgdt    [gdt_descriptor - TRAMPOLINE]   /* a 24-bit base: the GDT is below 16 MiB */
        mov     eax, cr0
        or      al, 1
        mov     cr0, eax
        .byte   0x66, 0xea                      /* ljmp SEL_CODE32:protected32, 32-bit offset */
        .long   protected32
        .word   SEL_CODE32

        .code32
protected32:
        mov     ax, SEL_DATA
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        cmp     dword ptr [BOOT_FLAG], 0
        je      1f
        mov     esp, BOOT_STACK                 /* only the boot CPU needs one here */
        call    build_page_tables
1:      mov     eax, cr4
        or      eax, 0x20                       /* PAE */
        mov     cr4, eax
        mov     eax, PML4
        mov     cr3, eax
        mov     ecx, 0xc0000080                 /* EFER.LME */
        rdmsr
        or      eax, 0x100
        wrmsr
        mov     eax, cr0
        or      eax, 0x80000000                 /* paging: long mode */
        mov     cr0, eax
        .byte   0xea                            /* ljmp SEL_CODE64:long64 */
        .long   long64
        .word   SEL_CODE64

/* Identity-map 0-4 GiB with 2 MiB pages: PML4[0] -> PDPT, PDPT[0..3] -> four directories. */
build_page_tables:
        mov     edi, PML4
        xor     eax, eax
        mov     ecx, 6 * 1024
        rep     stosd                           /* PML4, PDPT and the 4 directories, cleared */
        mov     dword ptr [PML4], PML4 + 0x1000 + 3
        mov     edi, PML4 + 0x1000
        mov     eax, PML4 + 0x2000 + 3
        mov     ecx, 4
2:      mov     [edi], eax
        add     eax, 0x1000
        add     edi, 8
        loop    2b
        mov     edi, PML4 + 0x2000
        mov     eax, 0x83                       /* present, writable, 2 MiB page */
        xor     edx, edx
        mov     ecx, 2048
3:      mov     [edi], eax
        mov     [edi + 4], edx
        add     eax, 0x200000
        adc     edx, 0
        add     edi, 8
        loop    3b
        ret

        .code64
long64:
        mov     ax, SEL_DATA
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        cmp     dword ptr [BOOT_FLAG], 0
        je      ap_entry
        mov     dword ptr [BOOT_FLAG], 0
        jmp     _start

ap_entry:
        identify
        mov     r13, [r12 * 8 + CPU_INDEX]
        lidt    [rip + idt_descriptor]
        call    input_setup_cpu                 /* input.S */
        /* fall through: the boot CPU prints this CPU's banner once it is online */

/* ---------------------------------------------------------------- per-CPU work */
work:
        mov     qword ptr [r12 * 8 + STATE], 1
        cmp     byte ptr [WORK_MODE], 0
        jne     idle                            /* idle.S: halt until there is something to do */
        xor     ebp, ebp                        /* iteration counter */
3:      inc     qword ptr [r12 * 8 + COUNTERS]
        mov     rax, [r12 * 8 + SHADOW]
        inc     rax
        mov     [r12 * 8 + SHADOW], rax
.if FAULT
        cmp     r12, FAULT_APIC
        jne     19f
        cmp     ebp, FAULT_AFTER
        je      misbehave
  .if FAULT == 5
        jmp     20f                             /* never looks at its park request */
  .endif
19:
.endif
        cmp     qword ptr [r12 * 8 + STATE], 2
        je      park
20:     inc     ebp
        test    ebp, 0xfff
        jnz     3b
        test    r13, r13                        /* the boot CPU reports exceptions, handles hot-plug */
        jnz     3b
        cmp     qword ptr [FAULTS_PENDING], 0
        je      13f
        call    report_exceptions
13:     call    input_poll                      /* input.S: NMIs taken, keyboard bytes */
        test    r14, r14
        jz      3b
        mov     dx, PM1_STS                     /* the power button pressed? */
        in      ax, dx
        test    ax, PWRBTN
        jnz     power_off
        mov     dx, r15w                        /* GPE0 status: a CPU hot-plug event pending? */
        in      ax, dx
        test    al, GPE_CPU_HOTPLUG
        jz      3b
        mov     ax, GPE_CPU_HOTPLUG
        out     dx, ax                          /* acknowledge it, then handle every event */
        call    hotplug_events
        jmp     3b

/* Boot CPU: the power button was pressed; acknowledge it and enter S5. */
power_off:
        mov     ax, PWRBTN
        out     dx, ax
        lea     rsi, [rip + msg_power_off]
        call    puts
        mov     dx, PM1_CNT
        mov     ax, SLP_EN_S5
        out     dx, ax
22:     hlt                                     /* the machine is off (or paused there) */
        jmp     22b

/* A CPU asked to park (unplug) stops working and halts for good. */
park:
        mov     qword ptr [r12 * 8 + STATE], 3
4:      hlt
        jmp     4b

/* ---------------------------------------------------------------- exceptions */
/* 32 stubs of 8 bytes: push the vector, go to the common handler. */
        .balign 8
exception_stubs:
        .set    vector, 0
        .rept   32
        .balign 8
        push    vector
        jmp     exception
        .set    vector, vector + 1
        .endr

/* Any CPU: record the vector, mark this CPU stopped and halt it for good. */
exception:
        pop     rax
        mov     [r12 * 8 + FAULT_VECTOR], rax
        mov     [r12 * 8 + FAULT_CPU], r13
        mov     qword ptr [r12 * 8 + STATE], STOPPED
        mov     qword ptr [FAULTS_PENDING], 1
        test    r13, r13
        jnz     24f
        call    report_exceptions               /* the boot CPU reports its own */
        jmp     18f
24:     cmp     byte ptr [WORK_MODE], 0
        je      18f
        mov     eax, [rip + boot_apic_id]       /* idle: wake the boot CPU to report it */
        call    wake_cpu
18:     hlt
        jmp     18b

/* Boot CPU: one line per newly stopped CPU. */
report_exceptions:
        push    rbx
        mov     qword ptr [FAULTS_PENDING], 0
        xor     ebx, ebx
14:     cmp     qword ptr [rbx * 8 + STATE], STOPPED
        jne     15f
        mov     qword ptr [rbx * 8 + STATE], STOPPED + 1
        mov     r8, [rbx * 8 + FAULT_CPU]
        mov     r9, rbx
        lea     rsi, [rip + msg_exception]
        call    cpu_line
        mov     rax, [rbx * 8 + FAULT_VECTOR]
        call    putdec
        lea     rsi, [rip + msg_newline]
        call    puts
15:     inc     ebx
        cmp     ebx, MAX_CPUS
        jb      14b
        pop     rbx
        ret

/* Boot CPU: interrupt gates for vectors 0-31 into the shared IDT. */
build_idt:
        lea     rax, [rip + exception_stubs]
        mov     rdi, IDT
        mov     ecx, 32
16:     mov     [rdi], ax                       /* offset 15:0 */
        mov     dx, cs
        mov     [rdi + 2], dx                   /* selector */
        mov     word ptr [rdi + 4], 0x8e00      /* present, DPL 0, 64-bit interrupt gate, no IST */
        mov     rdx, rax
        shr     rdx, 16
        mov     [rdi + 6], dx                   /* offset 31:16 */
        shr     rdx, 16
        mov     [rdi + 8], edx                  /* offset 63:32 */
        mov     dword ptr [rdi + 12], 0
        add     rax, 8
        add     rdi, 16
        loop    16b
        ret

.if FAULT
/* The test variants' misbehaviour (see the top of this file). */
misbehave:
  .if FAULT == 1
        ud2
  .elseif FAULT == 2
        mov     rax, 0x4000000000
        mov     qword ptr [rax], -1
        mov     rbx, [rax]
        inc     rbx
        mov     [UNASSIGNED_RESULT], rbx
        jmp     19b
  .elseif FAULT == 3
        cmp     qword ptr [TRIPLE_DONE], 0
        jne     19b
        mov     qword ptr [TRIPLE_DONE], 1
        lidt    [rip + no_idt]
        ud2
  .elseif FAULT == 4
        cli
21:     jmp     21b
  .elseif FAULT == 6
        mov     rax, 0x5000000000
        jmp     rax
  .else
        jmp     19b
  .endif
no_idt: .word   0
        .quad   0
.endif

/* ---------------------------------------------------------------- hot-plug (boot CPU) */
/* Like QEMU's CSCN method: find slots with events, handle each.  A CPU inserted is started when
   its event is found and reported (banner, _OST) once the scan is over or a removal comes, in
   the order of the events: CPUs plugged in a burst come up side by side. */
hotplug_events:
        push    rbx
        push    rbp
        xor     ebp, ebp                        /* CPUs started, not yet reported */
5:      mov     dx, r14w
        mov     eax, 0
        out     dx, eax                         /* selector 0, then scan */
        add     dx, CPU_CMD
        mov     al, CMD_NEXT_EVENT
        out     dx, al
        mov     dx, r14w
        add     dx, CPU_DATA
        in      eax, dx                         /* slot with an event (or the selector) */
        mov     ebx, eax
        call    select_slot
        test    al, FLAG_INSERT
        jnz     6f
        test    al, FLAG_REMOVE
        jnz     7f
        call    report_started
        pop     rbp
        pop     rbx
        ret
6:      /* insert: clear the event, start the CPU (report_started reports it), unless the guest policy says otherwise */
        mov     dx, r14w
        add     dx, CPU_FLAGS
        mov     al, CTRL_CLEAR_INSERT
        out     dx, al
        call    policy_plug                     /* policy.S */
        jnz     5b
        call    arch_id
        mov     [rbp * 8 + STARTED], ebx
        mov     [rbp * 8 + STARTED + 4], eax
        inc     ebp
        mov     ecx, eax
        mov     r8, rbx
        call    send_startup
        jmp     5b
7:      /* remove: report the CPUs started before it, then clear the event, park the CPU, report, eject
           (unless the guest policy says otherwise) */
        call    report_started
        call    select_slot
        mov     dx, r14w
        add     dx, CPU_FLAGS
        mov     al, CTRL_CLEAR_REMOVE
        out     dx, al
        call    policy_unplug                   /* policy.S */
        jnz     5b
        call    arch_id
        mov     ecx, eax
        lea     rsi, [rip + msg_parked]
        cmp     qword ptr [rcx * 8 + STATE], 3  /* already parked or stopped (a repeated request) */
        jae     17f
        mov     qword ptr [rcx * 8 + STATE], 2
        cmp     byte ptr [WORK_MODE], 0
        je      23f
        mov     eax, ecx                        /* idle: it is halted, wake it to see the request */
        call    wake_cpu
23:     mov     r10d, PARK_TIMEOUT
8:      cmp     qword ptr [rcx * 8 + STATE], 3  /* wait until it has parked */
        jae     17f
        dec     r10d
        jnz     8b
        mov     eax, ecx                        /* it did not: stop it with INIT */
        call    icr_high
        mov     r10d, LAPIC
        mov     [r10 + ICR_HIGH], eax
        mov     dword ptr [r10 + ICR_LOW], 0x4500
        mov     qword ptr [rcx * 8 + STATE], 3
        lea     rsi, [rip + msg_init]
17:     mov     r8, rbx
        mov     r9, rcx
        call    cpu_line
        mov     esi, OST_EVENT_EJECT
        mov     edi, OST_EJECT_DONE
        call    report_ost
        mov     dx, r14w
        add     dx, CPU_FLAGS
        mov     al, CTRL_EJECT
        out     dx, al
        jmp     5b

/* ebp = CPUs hotplug_events started: wait until each is online, print its banner, report its
   _OST (insert, success); then ebp = 0.  Preserves rbx. */
report_started:
        push    rbx
        xor     r11d, r11d
27:     cmp     r11d, ebp
        jae     28f
        mov     ebx, [r11 * 8 + STARTED]
        mov     ecx, [r11 * 8 + STARTED + 4]
        mov     r8, rbx
        call    wait_online
        call    select_slot
        mov     esi, OST_EVENT_INSERT
        mov     edi, OST_SUCCESS
        call    report_ost
        inc     r11d
        jmp     27b
28:     xor     ebp, ebp
        pop     rbx
        ret

        .include "policy.S"

/* ebx = slot: select it; return its flags in al */
select_slot:
        mov     dx, r14w
        mov     eax, ebx
        out     dx, eax
        add     dx, CPU_FLAGS
        in      al, dx
        ret

/* the selected slot's APIC ID in eax */
arch_id:
        mov     dx, r14w
        add     dx, CPU_CMD
        mov     al, CMD_ARCH_ID
        out     dx, al
        mov     dx, r14w
        add     dx, CPU_DATA
        in      eax, dx
        ret

/* esi = _OST event, edi = status, for the selected slot */
report_ost:
        mov     dx, r14w
        add     dx, CPU_CMD
        mov     al, CMD_OST_EVENT
        out     dx, al
        mov     dx, r14w
        add     dx, CPU_DATA
        mov     eax, esi
        out     dx, eax
        mov     dx, r14w
        add     dx, CPU_CMD
        mov     al, CMD_OST_STATUS
        out     dx, al
        mov     dx, r14w
        add     dx, CPU_DATA
        mov     eax, edi
        out     dx, eax
        ret

/* eax = APIC ID, ebx = its cpu index: start it, wait until it is online, print its banner */
start_cpu:
        mov     r8, rbx
        mov     ecx, eax
        call    send_startup
        /* fall through */
/* ecx = APIC ID, r8 = cpu index: wait until that CPU is online, print its banner */
wait_online:
9:      cmp     qword ptr [rcx * 8 + STATE], 1  /* online (or already past it: stopped by an exception) */
        jae     25f
        cmp     byte ptr [WORK_MODE], 0
        je      9b
        sti                                     /* idle: sleep until the new CPU's IPI, not spin */
        hlt
        cli
        jmp     9b
25:     mov     r9, rcx
        lea     rsi, [rip + msg_online]
        jmp     cpu_line

/* ecx = APIC ID, r8 = cpu index: INIT, STARTUP(AP_VECTOR); preserves rcx and r8 */
send_startup:
        push    rbx
        mov     qword ptr [rcx * 8 + STATE], 0
        mov     [rcx * 8 + CPU_INDEX], r8       /* the new CPU reads its index here */
        mov     ebx, LAPIC
        mov     eax, ecx
        call    icr_high
        mov     [rbx + ICR_HIGH], eax
        mov     dword ptr [rbx + ICR_LOW], 0x4500              /* INIT, assert */
        mov     [rbx + ICR_HIGH], eax
        mov     dword ptr [rbx + ICR_LOW], 0x4600 | AP_VECTOR  /* STARTUP */
        pop     rbx
        ret

/* eax = APIC ID -> ICR high: xAPIC destination in bits 31:24, qmpd's extension in 23:8 */
icr_high:
        push    rdx
        mov     edx, eax
        and     eax, 0xff
        shl     eax, 24
        shr     edx, 8
        shl     edx, 8
        or      eax, edx
        pop     rdx
        ret

        .include "idle.S"

/* ---------------------------------------------------------------- the machine */
/* Boot CPU: which chipset, and where its ACPI blocks are.  Programs the PM base (and turns the
   PM I/O space on) as firmware does; r14 = CPU hot-plug block (0 without ACPI), r15 = GPE0. */
find_chipset:
        xor     r14d, r14d
        xor     r15d, r15d
        mov     eax, 0x80000000                 /* 00:00.0 */
        call    pci_read
        cmp     eax, I440FX
        je      30f
        cmp     eax, Q35_MCH
        je      31f
        ret
30:     mov     eax, 0x80000b00                 /* 00:01.3, PIIX4 PM */
        call    pci_read
        cmp     eax, PIIX4_PM
        jne     32f
        mov     eax, 0x80000b40                 /* PMBASE */
        mov     ebx, PM_BASE | 1
        call    pci_write
        mov     eax, 0x80000b80                 /* PMREGMISC: PM I/O space on */
        mov     ebx, 1
        call    pci_write
        mov     r14d, 0xaf00
        mov     r15d, 0xafe0
32:     ret
31:     mov     eax, 0x8000f800                 /* 00:1f.0, ICH9 LPC */
        call    pci_read
        cmp     eax, ICH9_LPC
        jne     33f
        mov     eax, 0x8000f840                 /* PMBASE */
        mov     ebx, PM_BASE | 1
        call    pci_write
        mov     eax, 0x8000f844                 /* ACPI_CNTL: ACPI I/O space on */
        mov     ebx, 0x80
        call    pci_write
        mov     r14d, 0x0cd8
        mov     r15d, PM_BASE + 0x20
33:     ret

.ifdef PCI_DUMP
/* "pci 00:00.0 +00 <64 dwords in hex>" for the host bridge, 00:01.3 and 00:1f.0 */
dump_pci:
        push    rbx
        mov     ebx, 0x80000000
        call    dump_function
        mov     ebx, 0x80000b00
        call    dump_function
        mov     ebx, 0x8000f800
        call    dump_function
        pop     rbx
        ret
dump_function:
        lea     rsi, [rip + msg_pci]
        call    puts
        mov     eax, ebx
        shr     eax, 8
        call    puthex32
        push    rbp
        xor     ebp, ebp
40:     mov     al, ' '
        out     DEBUGCON, al
        lea     eax, [rbx + rbp * 4]
        call    pci_read
        call    puthex32
        inc     ebp
        cmp     ebp, 64
        jb      40b
        pop     rbp
        lea     rsi, [rip + msg_newline]
        call    puts
        ret
/* eax in 8 hex digits */
puthex32:
        push    rcx
        push    rdx
        mov     edx, eax
        mov     ecx, 8
41:     rol     edx, 4
        mov     al, dl
        and     al, 15
        add     al, '0'
        cmp     al, '9'
        jbe     42f
        add     al, 'a' - '9' - 1
42:     out     DEBUGCON, al
        loop    41b
        pop     rdx
        pop     rcx
        ret
msg_pci: .asciz "pci "
.endif

/* eax = configuration address -> eax = the dword there */
pci_read:
        mov     dx, PCI_ADDRESS
        out     dx, eax
        mov     dx, PCI_DATA
        in      eax, dx
        ret

/* eax = configuration address, ebx = the dword to write */
pci_write:
        mov     dx, PCI_ADDRESS
        out     dx, eax
        mov     dx, PCI_DATA
        mov     eax, ebx
        out     dx, eax
        ret

/* ---------------------------------------------------------------- fw_cfg */
        .include "fwcfg.S"

/* ---------------------------------------------------------------- output */
/* Only the boot CPU prints, so lines from several CPUs never interleave. */
online_banner:
        mov     r8, r13
        mov     r9, r12
        lea     rsi, [rip + msg_online]
        /* fall through */
/* "CPU <r8> (APIC ID <r9>) <rsi>" */
cpu_line:
        push    rsi
        lea     rsi, [rip + msg_cpu]
        call    puts
        mov     rax, r8
        call    putdec
        lea     rsi, [rip + msg_apic]
        call    puts
        mov     rax, r9
        call    putdec
        pop     rsi
        call    puts
        ret

puts:   mov     al, [rsi]
        test    al, al
        jz      10f
        out     DEBUGCON, al
        inc     rsi
        jmp     puts
10:     ret

putdec: push    rbx
        push    rcx
        push    rdx
        mov     rcx, rsp
        sub     rsp, 32
        mov     ebx, 10
11:     xor     edx, edx
        div     rbx
        add     dl, '0'
        dec     rcx
        mov     [rcx], dl
        test    rax, rax
        jnz     11b
12:     mov     al, [rcx]
        out     DEBUGCON, al
        inc     rcx
        lea     rdx, [rsp + 32]
        cmp     rcx, rdx
        jb      12b
        add     rsp, 32
        pop     rdx
        pop     rcx
        pop     rbx
        ret

        .include "input.S"

msg_hello:  .asciz "qmpd firmware: booting\n"
msg_cpu:    .asciz "qmpd firmware: CPU "
msg_apic:   .asciz " (APIC ID "
msg_online: .asciz ") online\n"
msg_parked: .asciz ") parked\n"
msg_init:   .asciz ") did not park: stopped with INIT\n"
msg_exception: .asciz ") exception "
msg_newline: .asciz "\n"
msg_power_off: .asciz "qmpd firmware: power button: entering S5\n"
        .balign 8
gdt:    .quad   0
        .quad   0x00cf9a000000ffff              /* SEL_CODE32: flat 32-bit code */
        .quad   0x00cf92000000ffff              /* SEL_DATA: flat data */
        .quad   0x00af9a000000ffff              /* SEL_CODE64: 64-bit code */
gdt_end:
gdt_descriptor:
        .word   gdt_end - gdt - 1
        .long   gdt
        .balign 8
idt_descriptor:
        .word   256 * 16 - 1
        .quad   IDT

/* ---------------------------------------------------------------- the ROM's real-mode part (QEMU) */
        .section .stub16, "ax"
        .code16
/* Runs from the ROM's alias below 1 MiB (segment 0xF000): copy the payload to 0x10000, tell the
   trampoline that the boot CPU comes, and enter it as the other CPUs will. */
rom_stub:
        cli
        cld
        mov     ax, 0xf000
        mov     ds, ax
        mov     ax, 0x1000
        mov     es, ax
        xor     si, si
        xor     di, di
        mov     cx, offset __payload_words
        rep     movsw
        xor     ax, ax
        mov     es, ax
        mov     dword ptr es:[BOOT_FLAG], 1
        .byte   0xea                            /* ljmp 0x1100:0 (the CPU entry at 0x11000) */
        .word   0, TRAMPOLINE >> 4

/* What qmpd reads instead of running the stub (qmpd/vcpu/loader.py): where the payload is, where it
   goes, where the boot CPU starts in 64-bit mode.  Just below the reset vector. */
        .section .trailer, "a"
        .ascii  "QMPDLM64"
        .long   0                               /* payload offset in the image */
        .long   __payload_bytes
        .long   0x10000                         /* load address */
        .long   _start

        .section .reset, "ax"
        .code16
reset_vector:
        .byte   0xea                            /* ljmp 0xf000:rom_stub */
        .word   rom_stub, 0xf000
