"""``python -m qmpd``."""

from __future__ import annotations

import sys

from qmpd.main import main

sys.exit(main())
