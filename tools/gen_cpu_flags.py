#!/usr/bin/env python3
"""Regenerate qmpd/cpu/data/x86_cpu_flags.json: the feature names ``-cpu help`` lists, from QEMU 7.2.

QEMU prints every name of every feature word (CPUID leaves and feature MSRs), sorted, under
"Recognized CPUID flags:" (``kvmclock`` twice: it names a bit in two words).  qmpd's ``-cpu help``
prints the same list; a unit test checks that each name is a property of qmpd's x86 CPUs.

Usage: tools/gen_cpu_flags.py   (needs qemu-system-x86_64)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "qmpd" / "cpu" / "data" / "x86_cpu_flags.json"
HEADER = "Recognized CPUID flags:"


def main() -> None:
    text = subprocess.run(["qemu-system-x86_64", "-cpu", "help"], check=True, capture_output=True, text=True).stdout
    flags = text.split(HEADER, 1)[1].split()
    OUT.write_text(json.dumps({"source": "qemu-system-x86_64 7.2 -cpu help", "flags": flags}, indent=1) + "\n")
    print(f"{len(flags)} flags")


if __name__ == "__main__":
    main()
