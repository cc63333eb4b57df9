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
 *   STATE     0 off, 1 online, 2 asked to park, 3 parked
 * COUNTERS and SHADOW stay equal unless an instruction ran twice or not at
 * all, which is how the tests check that pausing loses or doubles nothing.
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
        .set MAX_CPUS,   1024
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
        lea     rsi, [rip + msg_hello]
        call    puts
        call    online_banner
        test    r14, r14
        jz      work
        /* switch the hot-plug block to the modern interface */
        mov     dx, r14w
        xor     eax, eax
        out     dx, al
        /* start every other present CPU, one after the other */
        xor     ebx, ebx                        /* selector */
1:      call    select_slot
        test    al, FLAG_ENABLED
        jz      2f
        call    arch_id                         /* -> eax */
        cmp     rax, r12
        je      2f
        call    start_cpu
2:      inc     ebx
        cmp     ebx, MAX_CPUS
        jb      1b
        jmp     work

/* ---------------------------------------------------------------- other CPUs */
        .org    0x1000
ap_entry:
        mov     r13, rdi
        mov     r12, rsi
        mov     r14, rdx
        mov     r15, rcx
        /* fall through: the boot CPU prints this CPU's banner once it is online */

/* ---------------------------------------------------------------- per-CPU work */
work:
        mov     qword ptr [r12 * 8 + STATE], 1
        xor     ebp, ebp                        /* iteration counter */
3:      inc     qword ptr [r12 * 8 + COUNTERS]
        mov     rax, [r12 * 8 + SHADOW]
        inc     rax
        mov     [r12 * 8 + SHADOW], rax
        cmp     qword ptr [r12 * 8 + STATE], 2
        je      park
        inc     ebp
        test    ebp, 0xfff
        jnz     3b
        test    r13, r13                        /* the boot CPU handles hot-plug events */
        jnz     3b
        test    r14, r14
        jz      3b
        mov     dx, r15w                        /* GPE0 status: a CPU hot-plug event pending? */
        in      ax, dx
        test    al, GPE_CPU_HOTPLUG
        jz      3b
        mov     ax, GPE_CPU_HOTPLUG
        out     dx, ax                          /* acknowledge it, then handle every event */
        call    hotplug_events
        jmp     3b

/* A CPU asked to park (unplug) stops working and halts for good. */
park:
        mov     qword ptr [r12 * 8 + STATE], 3
4:      hlt
        jmp     4b

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
        cmp     qword ptr [rcx * 8 + STATE], 3  /* already parked (a repeated request) */
        je      8f
        mov     qword ptr [rcx * 8 + STATE], 2
8:      cmp     qword ptr [rcx * 8 + STATE], 3  /* wait until it has parked */
        jne     8b
        mov     r8, rbx
        mov     r9, rcx
        lea     rsi, [rip + msg_parked]
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
        /* ICR high: xAPIC destination in bits 31:24, qmpd's extension in 23:8 */
        mov     eax, ecx
        and     eax, 0xff
        shl     eax, 24
        mov     edx, ecx
        shr     edx, 8
        shl     edx, 8
        or      eax, edx
        mov     [rbx + ICR_HIGH], eax
        mov     dword ptr [rbx + ICR_LOW], 0x4500              /* INIT, assert */
        mov     [rbx + ICR_HIGH], eax
        mov     dword ptr [rbx + ICR_LOW], 0x4600 | AP_VECTOR  /* STARTUP */
9:      cmp     qword ptr [rcx * 8 + STATE], 1
        jne     9b
        mov     r9, rcx
        lea     rsi, [rip + msg_online]
        call    cpu_line
        pop     rbx
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
