/*
 * qmpd's Unicorn block hook, in C so that it costs a call per translated
 * block instead of a Python call (or Unicorn's per-instruction count hook).
 *
 * It makes stops exact.  A stop requested with uc_emu_stop() from another
 * thread can land between the store and the end of a read-modify-write
 * instruction, which then runs again on resume (a doubled increment).  A
 * stop requested from a block hook lands before the block's first
 * instruction.  So other threads only raise `stop`, and this hook, running
 * in the vCPU thread at the next block start, does the stopping.  `budget`
 * (when positive) counts blocks down and stops at zero: the time slice of
 * the one-vCPU-at-a-time mode.
 *
 * It also counts guest instructions: a block's instruction count comes from
 * Unicorn's own translation (uc_ctl TB_REQUEST_CACHE, which finds the block
 * being executed) the first time a block is seen, and from a small per-vCPU
 * table keyed by (address, size) after that.
 */
#include <stdint.h>

struct qmpd_tb_entry {
    uint64_t address;
    uint32_t size;
    uint32_t icount;
};

#define QMPD_TB_ENTRIES 1024  /* per vCPU: 16 KiB; a miss only costs a lookup in Unicorn */

struct qmpd_uc_tb {           /* Unicorn's uc_tb */
    uint64_t pc;
    uint16_t icount;
    uint16_t size;
};

struct qmpd_vcpu_control {
    volatile int32_t stop;       /* set by any thread: stop at the next block */
    int32_t stopped_by_hook;     /* set here when this hook stopped emulation */
    int64_t budget;              /* blocks left in this slice (<= 0: unlimited) */
    uint64_t blocks;             /* blocks executed (statistics) */
    uint64_t instructions;       /* guest instructions executed (statistics) */
    struct qmpd_tb_entry *tbs;   /* QMPD_TB_ENTRIES entries, or NULL: no instruction counting */
    struct qmpd_tb_entry last;   /* the previous block (a loop runs the same block again) */
    uint8_t pad[72];             /* 128 bytes: two vCPUs' hot fields never share a cache line */
};

typedef int (*qmpd_stop_fn)(void *uc);
typedef int (*qmpd_ctl_fn)(void *uc, uint32_t control, ...);
static qmpd_stop_fn stop_fn;
static qmpd_ctl_fn ctl_fn;
static uint32_t request_cache;

void qmpd_blockhook_init(void *uc_emu_stop, void *uc_ctl, uint32_t request_cache_control)
{
    stop_fn = (qmpd_stop_fn)uc_emu_stop;
    ctl_fn = (qmpd_ctl_fn)uc_ctl;
    request_cache = request_cache_control;
}

static uint32_t block_icount(void *uc, struct qmpd_tb_entry *tbs, uint64_t address, uint32_t size)
{
    struct qmpd_tb_entry *entry = &tbs[(address ^ (address >> 10)) % QMPD_TB_ENTRIES];
    if (entry->address != address || entry->size != size || entry->icount == 0) {
        struct qmpd_uc_tb tb = {0, 0, 0};
        if (ctl_fn(uc, request_cache, address, &tb) != 0 || tb.icount == 0)
            return 0;
        entry->address = address;
        entry->size = size;
        entry->icount = tb.icount;
    }
    return entry->icount;
}

void qmpd_block_hook(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct qmpd_vcpu_control *control = user_data;
    control->blocks++;
    if (control->last.address == address && control->last.size == size && control->last.icount) {
        control->instructions += control->last.icount;
    } else if (control->tbs) {
        control->last.address = address;
        control->last.size = size;
        control->last.icount = block_icount(uc, control->tbs, address, size);
        control->instructions += control->last.icount;
    }
    if (control->stop || (control->budget > 0 && --control->budget == 0)) {
        control->stopped_by_hook = 1;
        stop_fn(uc);
    }
}
