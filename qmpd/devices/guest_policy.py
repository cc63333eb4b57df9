"""qmpd's guest-policy device: the firmware reads, per CPU slot, how to answer a hot-plug event.

A paravirtual port block of qmpd's own at 0x530-0x53b, a range QEMU 7.2 leaves free on pc and
q35, so on QEMU it is absent (every read is 0xff) and the firmware behaves as the default:

====  ====  ============================================================================
off   size  register
====  ====  ============================================================================
0     1     read: signature 0x51 ('Q'): the device is there
0     4     write: slot selector (the CPU index the hot-plug block's selector names)
4     1     on-plug: 0 online, 1 ignore, 2 fail
5     1     on-unplug: 0 eject, 1 ignore, 2 refuse
6     1     ost-status: the _OST status to report for fail and refuse
7     1     on-event: 0 none, 1 panic, 2 triple-fault, 3 hang (what the CPU handling the event does)
8     4     delay-ms: how long to wait before acting on the slot's event
====  ====  ============================================================================

Reads take ``size`` bytes of that image from ``offset``; a selector past the last slot reads
the default policy.  The table is replaced whole by the loop (``update``) and read by vCPU
threads without a lock (one reference read); the selector, guest-visible state, has a lock
and is saved with the machine (qmpd.vmstate).
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

import threading
from typing import Any

from qmpd.vmstate import U32, fields, integer

#: Where the block sits, and its length.
GUEST_POLICY_BASE = 0x530
GUEST_POLICY_LEN = 12
SIGNATURE = 0x51


class SlotPolicy:
    """What the firmware does for one slot, as the registers encode it."""

    __slots__ = ("delay_ms", "on_event", "on_plug", "on_unplug", "ost_status")

    def __init__(
        self, on_plug: int = 0, on_unplug: int = 0, ost_status: int = 1, delay_ms: int = 0, on_event: int = 0
    ) -> None:
        self.on_plug = on_plug
        self.on_unplug = on_unplug
        self.ost_status = ost_status
        self.delay_ms = delay_ms
        self.on_event = on_event

    def image(self) -> bytes:
        """The register block with this policy selected."""
        return bytes((SIGNATURE, 0, 0, 0, self.on_plug, self.on_unplug, self.ost_status, self.on_event)) + (
            self.delay_ms.to_bytes(4, "little")
        )


#: No policy object applies: online, eject, no delay.
DEFAULT_POLICY = SlotPolicy()


class GuestPolicyPort:
    """The port block; vCPU threads call io_read/io_write, the loop calls update."""

    #: Its section of a saved machine (qmpd.vmstate): the selector (the policies are -object/object-add's).
    state_name = "guest-policy"
    state_version = 1

    def __init__(self, slot_count: int) -> None:
        self._images = (DEFAULT_POLICY.image(),) * slot_count
        self._default = DEFAULT_POLICY.image()
        self._selector = 0
        self._lock = threading.Lock()

    def update(self, table: tuple[SlotPolicy, ...]) -> None:
        """The effective policy of every slot (replaced whole: a reader sees the old or the new table)."""
        self._images = tuple(policy.image() for policy in table)

    def io_read(self, offset: int, size: int) -> int:
        with self._lock:
            selector = self._selector
        images = self._images
        image = images[selector] if selector < len(images) else self._default
        return int.from_bytes(image[offset : offset + size], "little")

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            with self._lock:
                self._selector = value

    # -- saved state (qmpd.vmstate) ---------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        with self._lock:
            return {"selector": self._selector}

    def check_state(self, state: Any, version: int) -> int:
        return integer(fields(state, "guest-policy"), "selector", U32, "guest-policy")

    def load_state(self, checked: int) -> None:
        with self._lock:
            self._selector = checked
