"""GLib hash-table order, which decides which unexpected argument QEMU names."""

from __future__ import annotations

import pytest

from qmpd.qobject.ghash import g_str_hash, iteration_order
from qmpd.qobject.writer import qdict_order

#: Key sets sent as query-status arguments to QEMU 7.2, and the key its error named.
QEMU_NAMED = [
    (["foo", "bar"], "bar"),
    (["a", "b", "c"], "b"),
    (["zeta", "alpha", "beta", "gamma", "delta", "epsilon", "eta", "theta", "iota", "kappa"], "epsilon"),
    ([f"x-{i}" for i in range(1, 18)], "x-2"),
]


@pytest.mark.parametrize(("keys", "named"), QEMU_NAMED)
def test_first_unexpected_key_matches_qemu(keys: list[str], named: str) -> None:
    assert iteration_order(qdict_order(keys))[0] == named


def test_iteration_visits_every_key_once() -> None:
    keys = [f"k{i}" for i in range(200)]
    assert sorted(iteration_order(keys)) == sorted(keys)


def test_g_str_hash_is_djb_over_signed_chars() -> None:
    assert g_str_hash("a") == (5381 * 33 + ord("a")) & 0xFFFFFFFF
    assert g_str_hash("\u00e9") == ((5381 * 33 - 61) * 33 - 87) & 0xFFFFFFFF
