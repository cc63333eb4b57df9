"""``migrate-set-parameters`` and ``query-migrate-parameters``: QEMU 7.2's parameters, checked and stored.

libvirt sets ``max-bandwidth`` and ``downtime-limit`` (and reads them back); qmpd checks every
parameter as QEMU's migrate_params_check does, on the merged result, with its texts, and stores
them per machine.  qmpd does not throttle: its migration writes as fast as the target takes it
and stops the guest for the whole save, whatever these say.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import GenericError

if TYPE_CHECKING:
    from qmpd.machine.machine import Machine

#: QEMU 7.2's defaults, in MigrationParameters' member order (as query-migrate-parameters answers them).
DEFAULTS: dict[str, Any] = {
    "announce-initial": 50,
    "announce-max": 550,
    "announce-rounds": 5,
    "announce-step": 100,
    "compress-level": 1,
    "compress-threads": 8,
    "compress-wait-thread": True,
    "decompress-threads": 2,
    "throttle-trigger-threshold": 50,
    "cpu-throttle-initial": 20,
    "cpu-throttle-increment": 10,
    "cpu-throttle-tailslow": False,
    "tls-creds": "",
    "tls-hostname": "",
    "tls-authz": "",
    "max-bandwidth": 128 << 20,
    "downtime-limit": 300,
    "x-checkpoint-delay": 20000,
    "block-incremental": False,
    "multifd-channels": 2,
    "xbzrle-cache-size": 64 << 20,
    "max-postcopy-bandwidth": 0,
    "max-cpu-throttle": 99,
    "multifd-compression": "none",
    "multifd-zlib-level": 1,
    "multifd-zstd-level": 1,
}
#: QEMU's MAX_MIGRATE_DOWNTIME (ms), spelled as its message spells it.
MAX_DOWNTIME = 2000 * 1000
TARGET_PAGE_SIZE = 4096
_UINT64_WRAP = 1 << 64
#: Taken and dropped, as QEMU 7.2 does: its migrate-set-parameters neither checks nor applies them
#: (they stay 1 in query-migrate-parameters, whatever is set).
IGNORED = frozenset({"multifd_zlib_level", "multifd_zstd_level"})

_parameters: weakref.WeakKeyDictionary[Machine, dict[str, Any]] = weakref.WeakKeyDictionary()


def parameters(machine: Machine) -> dict[str, Any]:
    """The machine's current parameters (QEMU keeps them for the process)."""
    current = _parameters.get(machine)
    if current is None:
        current = _parameters[machine] = dict(DEFAULTS)
    return current


def _invalid(name: str, expects: str) -> GenericError:
    return GenericError(f"Parameter '{name}' expects {expects}")


def check(p: dict[str, Any]) -> None:
    """QEMU 7.2's migrate_params_check, in its order, on the merged parameters."""
    between = "a value between {} and {}"
    if p["compress-level"] > 9:
        raise _invalid("compress_level", between.format(0, 9))
    if not 1 <= p["compress-threads"] <= 255:
        raise _invalid("compress_threads", between.format(1, 255))
    if not 1 <= p["decompress-threads"] <= 255:
        raise _invalid("decompress_threads", between.format(1, 255))
    if not 1 <= p["throttle-trigger-threshold"] <= 100:
        raise _invalid("throttle_trigger_threshold", "an integer in the range of 1 to 100")
    if not 1 <= p["cpu-throttle-initial"] <= 99:
        raise _invalid("cpu_throttle_initial", "an integer in the range of 1 to 99")
    if not 1 <= p["cpu-throttle-increment"] <= 99:
        raise _invalid("cpu_throttle_increment", "an integer in the range of 1 to 99")
    if p["downtime-limit"] > MAX_DOWNTIME:
        raise _invalid("downtime_limit", "an integer in the range of 0 to (2000 * 1000) ms")
    if not p["multifd-channels"] >= 1:
        raise _invalid("multifd_channels", between.format(1, 255))
    # multifd-zlib-level and multifd-zstd-level: see IGNORED.
    size = p["xbzrle-cache-size"]
    if size < TARGET_PAGE_SIZE or size & (size - 1):
        raise _invalid("xbzrle_cache_size", "a power of two no less than the target page size")
    if not p["cpu-throttle-initial"] <= p["max-cpu-throttle"] <= 99:
        raise _invalid("max_cpu_throttle", "an integer in the range of cpu_throttle_initial to 99")
    if p["announce-initial"] > 100000:
        raise _invalid("announce_initial", between.format(0, 100000))
    if p["announce-max"] > 100000:
        raise _invalid("announce_max", between.format(0, 100000))
    if p["announce-rounds"] > 1000:
        raise _invalid("announce_rounds", between.format(0, 1000))
    if not 1 <= p["announce-step"] <= 10000:
        raise _invalid("announce_step", between.format(0, 10000))


@qmp_command("query-migrate-parameters")
def query_migrate_parameters(ctx: CommandContext) -> dict[str, Any]:
    return dict(parameters(ctx.machine))


class _Absent:
    """A member the request left out (StrOrNull members: null means the empty string)."""


ABSENT = _Absent()


@qmp_command("migrate-set-parameters")
def migrate_set_parameters(
    ctx: CommandContext,
    announce_initial: int | None = None,
    announce_max: int | None = None,
    announce_rounds: int | None = None,
    announce_step: int | None = None,
    compress_level: int | None = None,
    compress_threads: int | None = None,
    compress_wait_thread: bool | None = None,
    decompress_threads: int | None = None,
    throttle_trigger_threshold: int | None = None,
    cpu_throttle_initial: int | None = None,
    cpu_throttle_increment: int | None = None,
    cpu_throttle_tailslow: bool | None = None,
    tls_creds: str | _Absent | None = ABSENT,
    tls_hostname: str | _Absent | None = ABSENT,
    tls_authz: str | _Absent | None = ABSENT,
    max_bandwidth: int | None = None,
    downtime_limit: int | None = None,
    x_checkpoint_delay: int | None = None,
    block_incremental: bool | None = None,
    multifd_channels: int | None = None,
    xbzrle_cache_size: int | None = None,
    max_postcopy_bandwidth: int | None = None,
    max_cpu_throttle: int | None = None,
    multifd_compression: str | None = None,
    multifd_zlib_level: int | None = None,
    multifd_zstd_level: int | None = None,
    block_bitmap_mapping: list[dict[str, Any]] | None = None,
) -> None:
    given = {key: value for key, value in locals().items() if key != "ctx"}
    current = parameters(ctx.machine)
    merged = dict(current)
    for name, value in given.items():
        if value is ABSENT or (value is None and not name.startswith("tls_")) or name in IGNORED:
            continue
        if value is None:  # StrOrNull: null resets to ""
            value = ""
        elif isinstance(value, int) and not isinstance(value, bool) and value < 0:  # QEMU's visitor wraps
            value += _UINT64_WRAP
        merged[name.replace("_", "-")] = value
    check(merged)
    current.update(merged)
