"""README's table of deliberate differences from QEMU 7.2, read as the differential sweeps' only exceptions.

The table lives in one place, README.md, section "Deliberate differences from QEMU 7.2". Its last column,
"sweep keys", names what each row excuses as backticked ``kind:pattern`` keys, ``pattern`` matching the key a
sweep builds for what it compares, with ``*`` and ``?`` as wildcards (brackets are literal: QOM paths are full
of them):

- ``command:NAME``, ``event:NAME``: a command's or event's resolved schema signature, or its absence;
- ``hmp:NAME``: an HMP command's absence; ``hmp:LINE``: the output of one command line (``hmp:x /*i *``);
- ``type:NAME``: a QOM type's presence, parent or abstractness;
- ``property:TYPE.PROP``: a property listed by qom-list-properties/device-list-properties for a type;
- ``model:NAME``: a CPU model's presence in query-cpu-definitions; ``model:NAME.FIELD`` one field of its entry,
  ``model:NAME.PROP`` one property of its expansions or of a realized CPU of the model, ``model:NAME.FEATURE`` also
  a feature in one side's unavailable-features only;
- ``path:PATH (TYPE)``: a QOM object present on one side only, with its type (``/machine/i440fx (*``,
  ``/machine/unattached/device[*] (hpet)``); its children are not reported apart;
- ``value:PATH.PROP``: one property of one QOM path present on one side only, or of another type or value
  (``/machine/unattached/device[*].lbr-fmt``);
- ``reply:COMMAND`` + the path of the difference in its reply: a query's answer
  (``reply:query-machines[pc-i440fx-7.2].cpu-max``, ``reply:query-kvm.present``).

A sweep asks ``deliberate(kind, key)`` for each difference it finds; anything not excused fails it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Deliberate differences from QEMU 7.2"
KINDS = frozenset({"command", "event", "hmp", "type", "property", "model", "path", "value", "reply"})
_KEY = re.compile(r"`([a-z]+):([^`]+)`")


@dataclass(frozen=True)
class Difference:
    """One row of the table: what differs, why, and the sweep keys it excuses."""

    what: str
    why: str
    keys: tuple[tuple[str, re.Pattern[str]], ...]


def _regex(pattern: str) -> re.Pattern[str]:
    """``*`` and ``?`` as fnmatch has them; every other character, brackets included, stands for itself."""
    parts = (".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.compile("".join(parts), re.DOTALL)


@cache
def differences() -> tuple[Difference, ...]:
    """The table's rows, in README order; a malformed row raises, so the README cannot drift silently."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(SECTION)
    rows: list[Difference] = []
    header: list[str] | None = None
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            if header[-1] != "sweep keys" or header[-2] != "why":
                raise ValueError(f"README {SECTION!r}: the last columns must be 'why' and 'sweep keys'")
            continue
        if set(line) <= set("|-: "):
            continue
        if len(cells) != len(header):
            raise ValueError(f"README {SECTION!r}: {len(cells)} cells, {len(header)} expected: {line}")
        keys = tuple((kind, _regex(pattern)) for kind, pattern in _KEY.findall(cells[-1]))
        for kind, _pattern in keys:
            if kind not in KINDS:
                raise ValueError(f"README {SECTION!r}: unknown sweep key kind {kind!r} in: {line}")
        if not cells[-2]:
            raise ValueError(f"README {SECTION!r}: a row without a reason: {line}")
        rows.append(Difference(what=cells[0], why=cells[-2], keys=keys))
    if header is None:
        raise ValueError(f"README {SECTION!r}: no table")
    return tuple(rows)


def deliberate(kind: str, key: str) -> Difference | None:
    """The row that excuses this difference, or None when it is a bug to fix."""
    if kind not in KINDS:
        raise ValueError(f"unknown sweep key kind {kind!r}")
    for row in differences():
        for row_kind, pattern in row.keys:
            if row_kind == kind and pattern.fullmatch(key):
                return row
    return None
