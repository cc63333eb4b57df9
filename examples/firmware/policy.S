/*
 * The guest side of qmpd-guest-policy: how the hot-plug handler answers, read per CPU slot
 * from qmpd's guest-policy device (ports 0x530-0x53b, README "Guest hot-plug policy"):
 *
 *   +0  read: 0x51 when the device is there; write: the slot (cpu index) to read
 *   +4  on-plug (0 online, 1 ignore, 2 fail)    +5  on-unplug (0 eject, 1 ignore, 2 refuse)
 *   +6  ost-status                              +7  on-event (0 none, 1 panic, 2 triple-fault, 3 hang)
 *   +8  delay-ms (32 bits)
 *
 * On QEMU nothing answers there (reads are 0xff): the default, online and eject at once.
 * delay-ms is waited on the ACPI PM timer (3.579545 MHz, 24 bits, at the PM base + 8), which
 * both emulators have once the firmware has placed the PM I/O space.
 * Included by qmpd-firmware.S (it uses its hot-plug helpers and registers).
 */
        .set POLICY_PORT,      0x530
        .set POLICY_SIGNATURE, 0x51
        .set POLICY_ACTIONS,   POLICY_PORT + 4
        .set POLICY_DELAY,     POLICY_PORT + 8
        .set PLUG_IGNORE,      1
        .set PLUG_FAIL,        2
        .set UNPLUG_IGNORE,    1
        .set UNPLUG_REFUSE,    2
        .set EVENT_PANIC,      1
        .set EVENT_TRIPLE_FAULT, 2
        .set EVENT_HANG,       3
        .set PVPANIC_PORT,     0x505
        .set PM_TMR,           PM_BASE + 8
        .set PM_TIMER_HZ,      3579545

/* ebx = slot -> eax = on-plug | on-unplug << 8 | ost-status << 16 | on-event << 24, once the
   slot's delay-ms has passed and on-event is done (it returns only for none); the default
   (online, eject) without qmpd's device */
policy_for_slot:
        push    rcx
        push    rdx
        mov     dx, POLICY_PORT
        in      al, dx
        cmp     al, POLICY_SIGNATURE
        jne     2f
        mov     eax, ebx
        out     dx, eax                         /* select the slot */
        mov     dx, POLICY_DELAY
        in      eax, dx
        mov     ecx, eax
        call    pm_wait_ms
        mov     dx, POLICY_ACTIONS
        in      eax, dx                         /* on-plug, on-unplug, ost-status, on-event */
        call    policy_event
        pop     rdx
        pop     rcx
        ret
2:      mov     eax, 1 << 16
        pop     rdx
        pop     rcx
        ret

/* eax = the slot's policy: what on-event says this CPU does instead of going on (none: return) */
policy_event:
        push    rax
        shr     eax, 24
        cmp     al, EVENT_PANIC
        je      8f
        cmp     al, EVENT_TRIPLE_FAULT
        je      9f
        cmp     al, EVENT_HANG
        je      10f
        pop     rax
        ret
8:      lea     rsi, [rip + msg_event_panic]    /* as a kernel panics: report it (pvpanic), halt */
        call    puts
        mov     dx, PVPANIC_PORT
        mov     al, 1
        out     dx, al
        cli
11:     hlt
        jmp     11b
9:      lea     rsi, [rip + msg_event_triple]   /* no IDT: the #UD becomes a triple fault (a reset) */
        call    puts
        lidt    [rip + policy_no_idt]
        ud2
10:     lea     rsi, [rip + msg_event_hang]     /* interrupts off, forever */
        call    puts
        cli
12:     jmp     12b
policy_no_idt:
        .word   0
        .quad   0

/* ecx = milliseconds: wait that long by the PM timer (its 24-bit wrap accounted for) */
pm_wait_ms:
        push    rbx
        push    rcx
        push    rdx
        push    rsi
        mov     eax, ecx
        imul    rax, rax, PM_TIMER_HZ
        xor     edx, edx
        mov     ecx, 1000
        div     rcx
        mov     rsi, rax                        /* ticks still to wait */
        mov     dx, PM_TMR
        in      eax, dx
        and     eax, 0xffffff
        mov     ebx, eax                        /* the previous reading */
1:      test    rsi, rsi
        jle     3f
        in      eax, dx
        and     eax, 0xffffff
        mov     ecx, eax
        sub     eax, ebx
        and     eax, 0xffffff                   /* ticks since the previous reading */
        mov     ebx, ecx
        sub     rsi, rax
        jmp     1b
3:      pop     rsi
        pop     rdx
        pop     rcx
        pop     rbx
        ret

/* The selected slot (ebx) has an insert event, cleared: act by its policy.  Returns with ZF set
   when the default applies (start the CPU, report success), clear when the policy answered. */
policy_plug:
        call    policy_for_slot
        cmp     al, PLUG_IGNORE
        je      4f
        cmp     al, PLUG_FAIL
        je      5f
        xor     eax, eax                        /* ZF: online */
        ret
4:      lea     rsi, [rip + msg_plug_ignored]
        jmp     policy_line
5:      mov     edi, eax
        shr     edi, 16
        and     edi, 0xff
        mov     esi, OST_EVENT_INSERT
        call    report_ost
        lea     rsi, [rip + msg_plug_failed]
        jmp     policy_line

/* The selected slot (ebx) has a remove event, cleared: the same for an eject request. */
policy_unplug:
        call    policy_for_slot
        cmp     ah, UNPLUG_IGNORE
        je      6f
        cmp     ah, UNPLUG_REFUSE
        je      7f
        xor     eax, eax                        /* ZF: eject */
        ret
6:      lea     rsi, [rip + msg_unplug_ignored]
        jmp     policy_line
7:      mov     edi, eax
        shr     edi, 16
        and     edi, 0xff
        mov     esi, OST_EVENT_EJECT
        call    report_ost
        lea     rsi, [rip + msg_unplug_refused]
        /* fall through */

/* "CPU <slot> (APIC ID <id>) <rsi>", and ZF clear */
policy_line:
        push    rsi
        call    arch_id
        mov     r9, rax
        mov     r8, rbx
        pop     rsi
        call    cpu_line
        or      eax, 1                          /* ZF clear: the policy answered */
        ret

msg_plug_ignored:   .asciz ") plug ignored (guest policy)\n"
msg_plug_failed:    .asciz ") plug failed (guest policy)\n"
msg_unplug_ignored: .asciz ") unplug ignored (guest policy)\n"
msg_unplug_refused: .asciz ") unplug refused (guest policy)\n"
msg_event_panic:    .asciz "qmpd firmware: guest policy: panic\n"
msg_event_triple:   .asciz "qmpd firmware: guest policy: triple fault\n"
msg_event_hang:     .asciz "qmpd firmware: guest policy: hang\n"
