"""``python -m qmpd.caches``: write every start-up cache of an installed qmpd, after its install.

Each is derived from files shipped with qmpd, used only while it matches them, and otherwise
replaced by the slower way it saves (README, "Start-up caches"): the schema bundle
(qmpd/qapi/bundle.py), the handler index (qmpd/handler_index.py), the CPU tables
(qmpd/cpu/tables.py) and the modules' code (qmpd/code_bundle.py).
"""

from __future__ import annotations

from qmpd import code_bundle, handler_index
from qmpd.cpu import tables
from qmpd.qapi import bundle


def main() -> None:
    """Write the four caches to their places in the package."""
    bundle.write()
    handler_index.write()
    tables.write()
    code_bundle.write()  # last: its entries are keyed by the sources as they are now


if __name__ == "__main__":
    main()
