/*
 * qmpd's default firmware: brings every CPU up, gives each a counter to
 * drive, and answers CPU hot-plug the way QEMU's ACPI code (AML) does.
 *
 * Boot protocol (qmpd starts every CPU in 64-bit flat mode, no paging):
 *   RDI = cpu index, RSI = APIC ID, RDX = base of the ACPI CPU hot-plug
 *   register block (0 if none), RCX = base of the GPE0 block, RSP = a stack.
 * The boot CPU starts at the image base (0x10000); the others at 0x11000,
 * the target of a STARTUP IPI with vector 0x11.
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
        /* ACPI PM1 registers at the PM base QEMU's firmware programs on pc and q35 */
        .set PM1_STS,    0x600
        .set PM1_EN,     0x602
        .set PM1_CNT,    0x604
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

        .text
        .globl _start
/* ---------------------------------------------------------------- boot CPU */
_start:
        mov     r13, rdi                        /* cpu index */
        mov     r12, rsi                        /* APIC ID */
        mov     r14, rdx                        /* hot-plug block base */
        mov     r15, rcx                        /* GPE0 base */
        call    build_idt
        lidt    [rip + idt_descriptor]
        lea     rsi, [rip + msg_hello]
        call    puts
        call    online_banner
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
ap_entry:
        mov     r13, rdi
        mov     r12, rsi
        mov     r14, rdx
        mov     r15, rcx
        lidt    [rip + idt_descriptor]
        /* fall through: the boot CPU prints this CPU's banner once it is online */

/* ---------------------------------------------------------------- per-CPU work */
work:
        mov     qword ptr [r12 * 8 + STATE], 1
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
13:     test    r14, r14
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
        jnz     18f
        call    report_exceptions               /* the boot CPU reports its own */
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
/* Like QEMU's CSCN method: find slots with events, handle each. */
hotplug_events:
        push    rbx
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
        pop     rbx
        ret
6:      /* insert: clear the event, start the CPU, report success */
        mov     dx, r14w
        add     dx, CPU_FLAGS
        mov     al, CTRL_CLEAR_INSERT
        out     dx, al
        call    arch_id
        call    start_cpu
        mov     esi, OST_EVENT_INSERT
        mov     edi, OST_SUCCESS
        call    report_ost
        jmp     5b
7:      /* remove: clear the event, park the CPU, report, eject */
        mov     dx, r14w
        add     dx, CPU_FLAGS
        mov     al, CTRL_CLEAR_REMOVE
        out     dx, al
        call    arch_id
        mov     ecx, eax
        lea     rsi, [rip + msg_parked]
        cmp     qword ptr [rcx * 8 + STATE], 3  /* already parked or stopped (a repeated request) */
        jae     17f
        mov     qword ptr [rcx * 8 + STATE], 2
        mov     r10d, PARK_TIMEOUT
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

/* eax = APIC ID, ebx = its cpu index: INIT, STARTUP(AP_VECTOR), wait until it is online, print its banner */
start_cpu:
        push    rbx
        mov     r8, rbx
        mov     ecx, eax
        mov     qword ptr [rcx * 8 + STATE], 0
        mov     ebx, LAPIC
        mov     eax, ecx
        call    icr_high
        mov     [rbx + ICR_HIGH], eax
        mov     dword ptr [rbx + ICR_LOW], 0x4500              /* INIT, assert */
        mov     [rbx + ICR_HIGH], eax
        mov     dword ptr [rbx + ICR_LOW], 0x4600 | AP_VECTOR  /* STARTUP */
9:      cmp     qword ptr [rcx * 8 + STATE], 1  /* online (or already past it: stopped by an exception) */
        jb      9b
        mov     r9, rcx
        lea     rsi, [rip + msg_online]
        call    cpu_line
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
idt_descriptor:
        .word   256 * 16 - 1
        .quad   IDT
