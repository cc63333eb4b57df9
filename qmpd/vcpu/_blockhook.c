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
 */
#include <stdint.h>

struct qmpd_vcpu_control {
    volatile int32_t stop;       /* set by any thread: stop at the next block */
    int32_t stopped_by_hook;     /* set here when this hook stopped emulation */
    int64_t budget;              /* blocks left in this slice (<= 0: unlimited) */
    uint64_t blocks;             /* blocks executed (statistics) */
    uint64_t bytes;              /* guest code bytes executed (statistics) */
    uint8_t pad[96];             /* 128 bytes: two vCPUs' hot fields never share a cache line */
};

typedef int (*qmpd_stop_fn)(void *uc);
static qmpd_stop_fn stop_fn;

void qmpd_blockhook_init(void *uc_emu_stop)
{
    stop_fn = (qmpd_stop_fn)uc_emu_stop;
}

void qmpd_block_hook(void *uc, uint64_t address, uint32_t size, void *user_data)
{
    struct qmpd_vcpu_control *control = user_data;
    (void)address;
    control->blocks++;
    control->bytes += size;
    if (control->stop || (control->budget > 0 && --control->budget == 0)) {
        control->stopped_by_hook = 1;
        stop_fn(uc);
    }
}
