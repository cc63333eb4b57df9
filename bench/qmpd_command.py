"""How the start-up benchmarks run qmpd: as its console script does (``.venv/bin/qmpd``, which libvirt's
emulator wrapper execs), but with this interpreter and the tree on PYTHONPATH, so that two trees can be
compared (run it with the tree as the working directory too: ``-c`` puts the working directory first
on sys.path).  ``python -m qmpd`` would add runpy and importlib.util, which no installed qmpd pays."""

from __future__ import annotations

import sys

#: The console script's own two lines (see the ``[project.scripts]`` entry in pyproject.toml).
QMPD = [sys.executable, "-c", "import sys; from qmpd.main import main; sys.exit(main())"]
