/*
 * fw_cfg: how the firmware reads its options, on QEMU and on qmpd alike (included by
 * qmpd-firmware.S, in its 64-bit payload).
 *
 * QEMU's firmware configuration interface (pc and q35): a 16-bit write of an item key to port
 * 0x510 selects the item, then each byte read of port 0x511 gives its next byte.  Item 0 is the
 * signature "QEMU"; item 0x19 is the file directory: a big-endian count, then one 64-byte entry
 * per file (big-endian size, big-endian key, 2 reserved bytes, a NUL-padded name of 56 bytes).
 * Only the traditional port interface is used here (DMA is not needed to read a few bytes).
 *
 * Options (`-fw_cfg name=opt/qmpd/work,string=idle` on either emulator):
 *   opt/qmpd/work   "count" (the default, also without fw_cfg): every CPU drives its counters;
 *                   "idle": CPUs halt after their banner and wake for IPIs and hot-plug events.
 * read_options sets the byte at WORK_MODE (0 count, 1 idle); the work code tests it.  Any other
 * value prints a line on the debug console and counts.
 *
 * Calling convention of these routines: they preserve rbx, rbp and r12-r15.
 */
        .set FW_CFG_SELECTOR, 0x510
        .set FW_CFG_DATA,     0x511
        .set FW_CFG_SIGNATURE, 0x00
        .set FW_CFG_FILE_DIR,  0x19
        .set FW_CFG_MAGIC,     0x554d4551       /* "QEMU" read as a little-endian dword */
        .set WORK_MODE,  0x20b018               /* byte: the work mode read at boot */
        .set WORK_COUNT, 0
        .set WORK_IDLE,  1
        .set OPTION_MAX, 16                     /* longest option value read (longer: unknown) */

/* Boot CPU: WORK_MODE from opt/qmpd/work (count when fw_cfg or the file is absent). */
read_options:
        mov     byte ptr [WORK_MODE], WORK_COUNT
        call    fwcfg_present
        jne     1f
        lea     rsi, [rip + option_work]
        call    fwcfg_find                      /* -> eax key, ecx size */
        jne     1f
        cmp     ecx, OPTION_MAX
        ja      2f
        lea     rdi, [rip + option_value]
        call    fwcfg_read
        mov     byte ptr [rdi], 0
        lea     rsi, [rip + option_value]
        lea     rdi, [rip + work_count]
        call    strequal
        je      1f
        lea     rdi, [rip + work_idle]
        call    strequal
        jne     2f
        mov     byte ptr [WORK_MODE], WORK_IDLE
1:      ret
2:      lea     rsi, [rip + msg_work_unknown]
        jmp     puts

/* ZF set when fw_cfg answers with its signature.  Clobbers rax, rcx, rdx, rdi. */
fwcfg_present:
        mov     eax, FW_CFG_SIGNATURE
        call    fwcfg_select
        lea     rdi, [rip + option_value]
        mov     ecx, 4
        call    fwcfg_read
        cmp     dword ptr [rip + option_value], FW_CFG_MAGIC
        ret

/* ax = item key: select it (offset 0). */
fwcfg_select:
        mov     dx, FW_CFG_SELECTOR
        out     dx, ax
        ret

/* ecx bytes of the selected item to [rdi]; rdi ends past them.  Clobbers rax, rcx, rdx. */
fwcfg_read:
        mov     dx, FW_CFG_DATA
        test    ecx, ecx
        jz      2f
1:      in      al, dx
        mov     [rdi], al
        inc     rdi
        dec     ecx
        jnz     1b
2:      ret

/* rsi = NUL-terminated file name: ZF set when the directory has it, then eax = its key and
   ecx = its size.  Clobbers rax, rcx, rdx, rdi, r8-r10. */
fwcfg_find:
        mov     eax, FW_CFG_FILE_DIR
        call    fwcfg_select
        lea     rdi, [rip + fwcfg_entry]
        mov     ecx, 4
        call    fwcfg_read
        mov     r8d, [rip + fwcfg_entry]
        bswap   r8d                             /* the number of files */
1:      test    r8d, r8d
        jz      3f
        dec     r8d
        lea     rdi, [rip + fwcfg_entry]
        mov     ecx, 64
        call    fwcfg_read
        lea     rdi, [rip + fwcfg_entry + 8]
        mov     byte ptr [rdi + 55], 0          /* a name that fills its 56 bytes still ends */
        call    strequal
        jne     1b
        movzx   eax, word ptr [rip + fwcfg_entry + 4]
        xchg    al, ah
        mov     ecx, [rip + fwcfg_entry]
        bswap   ecx
        push    rcx
        call    fwcfg_select                    /* ready to read it */
        pop     rcx
        cmp     eax, eax                        /* found: ZF */
        ret
3:      or      r8d, 1                          /* not found: ZF clear */
        ret

/* ZF set when the NUL-terminated strings at rsi and rdi are equal.  Clobbers r9, r10. */
strequal:
        xor     r9d, r9d
1:      mov     r10b, [rsi + r9]
        cmp     r10b, [rdi + r9]
        jne     2f
        inc     r9
        test    r10b, r10b
        jnz     1b
2:      ret

option_work:      .asciz "opt/qmpd/work"
work_count:       .asciz "count"
work_idle:        .asciz "idle"
msg_work_unknown: .asciz "qmpd firmware: opt/qmpd/work: unknown value, counting\n"
        .balign 8
fwcfg_entry:      .skip 64
option_value:     .skip OPTION_MAX + 1

.ifdef FWCFG_DUMP
/* Test variant: what a guest reads of fw_cfg (tests/differential/test_firmware_diff.py compares
   it on both emulators): the standard items qmpd provides, opt/qmpd/work's size, the DMA
   signature, a DMA read and a DMA to an address outside RAM, and port accesses of odd widths. */
        .set DMA_DESCRIPTOR, 0x300000
        .set DMA_TARGET,     0x300100
        .set RAM_END,        0x8000000          /* the tests run it with -m 128 */
dump_fwcfg:
        push    rbx
        lea     rbx, [rip + dump_items]
1:      movzx   eax, word ptr [rbx]
        cmp     ax, 0xffff
        je      2f
        lea     rsi, [rip + msg_fwcfg_item]
        call    puts
        movzx   eax, word ptr [rbx]
        call    puthex8
        movzx   eax, word ptr [rbx]
        call    fwcfg_select
        movzx   ecx, word ptr [rbx + 2]
        lea     rdi, [rip + fwcfg_entry]
        call    fwcfg_read
        movzx   ecx, word ptr [rbx + 2]
        lea     rsi, [rip + fwcfg_entry]
        call    puthex_bytes
        add     rbx, 4
        jmp     1b
2:      lea     rsi, [rip + option_work]
        call    fwcfg_find
        mov     ebx, 0xffffffff                 /* absent */
        jne     3f
        mov     ebx, ecx
3:      lea     rsi, [rip + msg_fwcfg_size]
        call    puts
        mov     eax, ebx
        call    puthex32le
        /* the DMA signature: two dwords at 0x514 and 0x518 */
        lea     rsi, [rip + msg_fwcfg_dma]
        call    puts
        mov     dx, 0x514
        in      eax, dx
        call    puthex32le
        mov     dx, 0x518
        in      eax, dx
        call    puthex32le
        lea     rsi, [rip + msg_newline]
        call    puts
        /* a DMA read of the signature, then one to unassigned memory */
        mov     rdi, DMA_TARGET
        call    dma_signature
        mov     rdi, 0x4000000000
        call    dma_signature
        mov     rdi, RAM_END - 2                /* half in RAM (-m 128) */
        call    dma_signature
        lea     rsi, [rip + msg_fwcfg_ram_end]
        call    puts
        movzx   eax, word ptr [RAM_END - 2]
        call    puthex32le
        lea     rsi, [rip + msg_newline]
        call    puts
        /* odd widths: a word and a dword read of 0x510 after selecting the signature */
        lea     rsi, [rip + msg_fwcfg_ports]
        call    puts
        xor     eax, eax
        call    fwcfg_select
        mov     dx, FW_CFG_SELECTOR
        in      ax, dx
        movzx   eax, ax
        call    puthex32le
        mov     dx, FW_CFG_SELECTOR
        in      eax, dx
        call    puthex32le
        mov     dx, FW_CFG_DATA
        in      eax, dx
        call    puthex32le
        mov     dx, FW_CFG_SELECTOR
        in      al, dx
        movzx   eax, al
        call    puthex32le
        lea     rsi, [rip + msg_newline]
        call    puts
        pop     rbx
        ret

/* rdi = target: DMA-read 4 bytes of the signature there; print the control word and the bytes */
dma_signature:
        mov     dword ptr [DMA_DESCRIPTOR], 0x0a000000   /* select key 0 + read, big-endian */
        mov     dword ptr [DMA_DESCRIPTOR + 4], 0x04000000
        mov     rax, rdi
        bswap   rax
        mov     [DMA_DESCRIPTOR + 8], rax
        mov     dword ptr [DMA_TARGET], 0
        mov     dx, 0x514
        xor     eax, eax
        out     dx, eax                         /* the descriptor's address, high half */
        mov     eax, DMA_DESCRIPTOR
        bswap   eax
        mov     dx, 0x518
        out     dx, eax                         /* low half: go */
        lea     rsi, [rip + msg_fwcfg_dma_read]
        call    puts
        mov     eax, [DMA_DESCRIPTOR]
        call    puthex32le
        mov     eax, [DMA_TARGET]
        call    puthex32le
        lea     rsi, [rip + msg_newline]
        jmp     puts

/* ecx bytes at rsi in hex, then a newline */
puthex_bytes:
        test    ecx, ecx
        jz      5f
4:      mov     al, ' '
        out     DEBUGCON, al
        movzx   eax, byte ptr [rsi]
        call    puthex8
        inc     rsi
        dec     ecx
        jnz     4b
5:      lea     rsi, [rip + msg_newline]
        jmp     puts

/* eax: " " and its four bytes in memory order, in hex */
puthex32le:
        push    rcx
        push    rsi
        mov     [rip + fwcfg_entry], eax
        mov     al, ' '
        out     DEBUGCON, al
        mov     ecx, 4
        lea     rsi, [rip + fwcfg_entry]
6:      movzx   eax, byte ptr [rsi]
        call    puthex8
        inc     rsi
        dec     ecx
        jnz     6b
        pop     rsi
        pop     rcx
        ret

/* al in two hex digits */
puthex8:
        push    rax
        shr     al, 4
        call    7f
        pop     rax
7:      and     al, 15
        add     al, '0'
        cmp     al, '9'
        jbe     8f
        add     al, 'a' - '9' - 1
8:      out     DEBUGCON, al
        ret

/* key, length: the standard items qmpd provides */
dump_items:
        .word   0x00, 4, 0x01, 4, 0x02, 16, 0x03, 8, 0x04, 2, 0x05, 2, 0x0e, 2, 0x0f, 2, 0xffff
msg_fwcfg_item:     .asciz "fw_cfg item "
msg_fwcfg_size:     .asciz "fw_cfg opt/qmpd/work size"
msg_fwcfg_dma:      .asciz "\nfw_cfg dma signature"
msg_fwcfg_dma_read: .asciz "fw_cfg dma control, data"
msg_fwcfg_ports:    .asciz "fw_cfg ports"
msg_fwcfg_ram_end:  .asciz "fw_cfg at the end of RAM"
.endif
