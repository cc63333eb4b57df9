"""The order in which GLib's GHashTable iterates string keys.

When a command gets several unexpected arguments, QEMU names the first one
its input visitor finds in a ``GHashTable`` (keys inserted in QDict order,
hashed with ``g_str_hash``).  To name the same one we replay GLib 2.74's
open-addressing table: ``(hash * 11) % prime`` start, quadratic probing, and
its in-place resize once the table is 15/16 occupied.
"""

from __future__ import annotations

from collections.abc import Iterable

_MIN_SHIFT = 3
_PRIME_MOD = (
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521,
    131071, 262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393,
    67108859, 134217689, 268435399, 536870909, 1073741789, 2147483647,
)  # fmt: skip


def g_str_hash(key: str) -> int:
    """GLib's djb hash over the key's bytes, read as signed chars."""
    value = 5381
    for byte in key.encode("utf-8", "surrogatepass").replace(b"\0", b"\xc0\x80"):
        signed = byte - 256 if byte >= 0x80 else byte
        value = (value * 33 + signed) & 0xFFFFFFFF
    return value if value >= 2 else 2


class _Table:
    def __init__(self) -> None:
        self._set_shift(_MIN_SHIFT)
        self.hashes = [0] * self.size
        self.keys: list[str | None] = [None] * self.size
        self.nnodes = 0
        self.noccupied = 0

    def _set_shift(self, shift: int) -> None:
        self.size = 1 << shift
        self.mod = _PRIME_MOD[shift]
        self.mask = self.size - 1

    def _index(self, hash_value: int) -> int:
        return (hash_value * 11 & 0xFFFFFFFF) % self.mod

    def insert(self, key: str) -> None:
        hash_value = g_str_hash(key)
        index = self._index(hash_value)
        step = 0
        while self.hashes[index] != 0:
            if self.hashes[index] == hash_value and self.keys[index] == key:
                return
            step += 1
            index = (index + step) & self.mask
        self.hashes[index] = hash_value
        self.keys[index] = key
        self.nnodes += 1
        self.noccupied += 1
        if self.size <= self.noccupied + self.noccupied // 16:
            self._resize()

    def _resize(self) -> None:
        old_size = self.size
        target = int(self.nnodes * 1.333)
        shift = 0
        while target:
            target >>= 1
            shift += 1
        self._set_shift(max(shift, _MIN_SHIFT))
        if self.size > old_size:
            self.hashes.extend([0] * (self.size - old_size))
            self.keys.extend([None] * (self.size - old_size))
        moved = [False] * max(self.size, old_size)
        for i in range(old_size):
            node_hash = self.hashes[i]
            if node_hash < 2:
                self.hashes[i] = 0
                continue
            if moved[i]:
                continue
            self.hashes[i] = 0
            key = self.keys[i]
            self.keys[i] = None
            while True:
                index = self._index(node_hash)
                step = 0
                while moved[index]:
                    step += 1
                    index = (index + step) & self.mask
                moved[index] = True
                replaced_hash = self.hashes[index]
                replaced_key = self.keys[index]
                self.hashes[index] = node_hash
                self.keys[index] = key
                if replaced_hash < 2:
                    break
                node_hash = replaced_hash
                key = replaced_key
        if self.size < old_size:
            del self.hashes[self.size :]
            del self.keys[self.size :]
        self.noccupied = self.nnodes


def iteration_order(keys: Iterable[str]) -> list[str]:
    """Keys, inserted in the given order, as a GHashTable iterator returns them."""
    table = _Table()
    for key in keys:
        table.insert(key)
    return [key for key in table.keys if key is not None]
