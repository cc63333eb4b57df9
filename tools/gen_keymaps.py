#!/usr/bin/env python3
"""Regenerate qmpd/devices/data/keymaps.json from keycodemapdb's keymaps.csv.

QEMU builds its key tables from the keycodemapdb database (a git submodule;
github.com/qemu/keycodemapdb, data/keymaps.csv): for each QKeyCode the AT
scancode of sets 1, 2 and 3 its PS/2 keyboard sends, and for each QEMU key
number (send-key's ``number`` keys: an XT scancode, with bit 7 standing for the
0xE0 prefix) the QKeyCode it means.  This script derives the same tables, for
the key codes QEMU 7.2 has (schema/types/QKeyCode.json; later ones map to
``unmapped``).  A later row of the database wins over an earlier one, as in
keycodemapdb's generator.

QEMU 7.2 (December 2022) builds from a keycodemapdb older than its 2023 changes (Hangeul/Hanja
scancodes, F13-F24): take data/keymaps.csv of commit 0c3623c (2022-08-23) or older.  With a newer one,
lang1 and lang2 would send bytes that QEMU 7.2 does not (tests/differential/test_input_diff.py sends
every key to both and compares).

Usage: tools/gen_keymaps.py path/to/keymaps.csv   (git show 0c3623c:data/keymaps.csv in qemu/keycodemapdb)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "qmpd" / "devices" / "data" / "keymaps.json"
#: keymaps.csv columns.
LINUX, AT1, AT2, AT3, QCODE = 1, 4, 5, 6, 16
#: Hangeul and Hanja: their set 1 codes are above 0x7f without an 0xE0 prefix.
HANJA_HANGEUL = (0xF1, 0xF2)


def _number(text: str) -> int | None:
    if not text:
        return None
    return int(text, 16) if text.startswith("0x") else int(text)


def main(csv_path: str) -> None:
    qcodes = json.loads((REPO / "schema" / "types" / "QKeyCode.json").read_text())["enum"]
    known = set(qcodes)
    at: dict[int, dict[int, int]] = {AT1: {}, AT2: {}, AT3: {}}
    qcode_row: dict[str, int] = {}
    qnum: dict[int, int] = {}
    with open(csv_path, newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            linux = _number(row[LINUX])
            assert linux is not None
            for column, table in at.items():
                value = _number(row[column])
                if value is not None:
                    table[linux] = value
            if row[QCODE]:
                qcode_row[row[QCODE]] = linux
            set1 = at[AT1].get(linux)
            if set1 is not None:
                if set1 in HANJA_HANGEUL:
                    number = set1 & 0x7F
                elif set1 > 0x7F:
                    assert set1 & ~0x7F == 0xE000
                    number = 0x80 | (set1 & 0x7F)
                else:
                    number = set1
                qnum[number] = linux
                if number == 0x54:  # Print/SysRq: QEMU also takes 0xb7
                    qnum[0xB7] = linux
    names = {linux: name for name, linux in qcode_row.items()}
    tables: dict[str, object] = {"qcodes": qcodes}
    for label, column in (("set1", AT1), ("set2", AT2), ("set3", AT3)):
        tables[label] = {
            name: at[column][qcode_row[name]]
            for name in qcodes
            if name in qcode_row and at[column].get(qcode_row[name])
        }
    tables["numbers"] = {
        str(number): names.get(linux, "unmapped") if names.get(linux, "unmapped") in known else "unmapped"
        for number, linux in sorted(qnum.items())
    }
    OUT.write_text(json.dumps(tables, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
