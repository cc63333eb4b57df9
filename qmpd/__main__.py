"""``python -m qmpd``."""

from __future__ import annotations

import sys

from qmpd.daemon import main

sys.exit(main())
