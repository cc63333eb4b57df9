/*
 * Guest for test_guest.py: ROUNDS pseudo-random accesses to fw_cfg's ports (0x510-0x511 and the
 * DMA registers 0x514-0x51b) of every width, with random selectors, random DMA descriptor
 * addresses (outside RAM) and random descriptors (control, length, target) in a scratch page.
 * Then it reads the signature the ordinary way and prints "fw_cfg ok" (or "fw_cfg bad") on the
 * debug console.  ERRORS counts the descriptors that came back with the error bit set.
 */
        .intel_syntax noprefix
        .code64
        .set DEBUGCON,   0xe9
        .set SCRATCH,    0x300000               /* the descriptor; targets inside RAM go to SCRATCH+0x100.. */
        .set ERRORS,     0x2ff000
        .set ROUNDS,     20000

        .text
        .globl _start
_start:
        mov     r8, 0x9e3779b97f4a7c15          /* xorshift64 state */
        mov     qword ptr [ERRORS], 0
        mov     ebp, ROUNDS
next_round:
        call    random
        mov     rbx, rax
        call    random                          /* rax: the operand, rbx: which access */
        and     ebx, 15
        lea     rcx, [rip + accesses]
        mov     rdi, [rcx + rbx * 8]
        add     rdi, rcx
        jmp     rdi
round_done:
        dec     ebp
        jnz     next_round
        mov     dx, 0x510                       /* the signature, after all that */
        xor     eax, eax
        out     dx, ax
        inc     dx
        xor     ecx, ecx
        mov     ebx, 4
1:      in      al, dx
        shl     ecx, 8
        mov     cl, al
        dec     ebx
        jnz     1b
        cmp     ecx, 0x51454d55                 /* "QEMU", first byte highest */
        je      2f
        lea     rsi, [rip + msg_bad]
        jmp     3f
2:      lea     rsi, [rip + msg_ok]
3:      call    puts
4:      hlt
        jmp     4b

a_select:       mov dx, 0x510
                out dx, ax
                jmp round_done
a_data:         mov dx, 0x511
                in al, dx
                jmp round_done
a_data_at_510:  mov dx, 0x510
                in al, dx
                jmp round_done
a_word_read:    mov dx, 0x510
                in ax, dx
                jmp round_done
a_dword_read:   mov dx, 0x511
                in eax, dx
                jmp round_done
a_byte_write:   mov dx, 0x511
                out dx, al
                jmp round_done
a_dword_write:  mov dx, 0x510
                out dx, eax
                jmp round_done
a_dma_high:     or eax, 1                       /* never 0: the next transfer is outside RAM */
                mov dx, 0x514
                out dx, eax
                jmp round_done
a_dma_go:       mov ecx, eax
                call random
                or eax, 1
                mov dx, 0x514
                out dx, eax
                mov eax, ecx
                mov dx, 0x518
                out dx, eax                     /* a transfer at high:random, outside RAM */
                jmp round_done
a_dma_reads:    mov dx, 0x514
                in eax, dx
                mov dx, 0x518
                in eax, dx
                mov dx, 0x516
                in ax, dx
                mov dx, 0x51b
                in al, dx
                jmp round_done
a_dma_odd:      mov dx, 0x516
                out dx, ax
                mov dx, 0x515
                out dx, al
                mov dx, 0x519
                out dx, eax
                jmp round_done
a_descriptor:   mov [SCRATCH], eax              /* random control */
                call random
                mov [SCRATCH + 4], eax          /* random length */
                call random
                test al, 1
                jz 5f
                and eax, 0xfff                  /* half of them: a target in the scratch page */
                add eax, SCRATCH + 0x100
                bswap rax
                jmp 6f
5:              bswap rax                       /* the others: anywhere */
6:              mov [SCRATCH + 8], rax
                test byte ptr [SCRATCH + 3], 0x10   /* a write (from guest memory) */
                jz 7f
                and dword ptr [SCRATCH + 4], 0xff0f0000   /* keep lengths of writes small */
7:              test byte ptr [SCRATCH + 3], 0x02   /* a read into guest memory */
                jz 8f
                mov word ptr [SCRATCH + 4], 0   /* at most 64 KiB: never over this code */
8:              mov dx, 0x514
                xor eax, eax
                out dx, eax
                mov eax, SCRATCH
                bswap eax
                mov dx, 0x518
                out dx, eax
                test byte ptr [SCRATCH + 3], 1
                jz round_done
                inc qword ptr [ERRORS]
                jmp round_done

/* xorshift64 -> rax (and r8) */
random:
        mov     rax, r8
        shl     rax, 13
        xor     r8, rax
        mov     rax, r8
        shr     rax, 7
        xor     r8, rax
        mov     rax, r8
        shl     rax, 17
        xor     r8, rax
        mov     rax, r8
        ret

puts:   mov     al, [rsi]
        test    al, al
        jz      9f
        out     DEBUGCON, al
        inc     rsi
        jmp     puts
9:      ret

        .balign 8
accesses:
/* offsets from the table: the image is not linked */
        .quad   a_select - accesses
        .quad   a_data - accesses
        .quad   a_data_at_510 - accesses
        .quad   a_word_read - accesses
        .quad   a_dword_read - accesses
        .quad   a_byte_write - accesses
        .quad   a_dword_write - accesses
        .quad   a_dma_high - accesses
        .quad   a_dma_go - accesses
        .quad   a_dma_reads - accesses
        .quad   a_dma_odd - accesses
        .quad   a_descriptor - accesses
        .quad   a_descriptor - accesses
        .quad   a_select - accesses
        .quad   a_data - accesses
        .quad   a_descriptor - accesses
msg_ok:  .asciz "fw_cfg ok\n"
msg_bad: .asciz "fw_cfg bad\n"
