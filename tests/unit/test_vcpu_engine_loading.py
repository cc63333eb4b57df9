"""A vCPU thread loads Unicorn without holding its lock: the event loop's thread never waits for the import.

A restored vCPU builds its engine in its own thread; the first engine of a process imports Unicorn
(tens of milliseconds).  It once did so holding the vCPU's lock, so the loop's ``resume`` after an
incoming migration waited for the import, and the query-migrate that reported "completed" with it.
The import is held up here on purpose, until the loop's thread has taken the lock.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO

_SCRIPT = """
import sys, threading
from qmpd.vcpu.bridge import LoopBridge
from qmpd.vcpu.manager import VCPUManager

importing, may_import = threading.Event(), threading.Event()

class HoldEngineImport:
    def find_spec(self, name, path=None, target=None):
        if name == "qmpd.vcpu.engine":
            importing.set()
            may_import.wait(30)
        return None

class FakeEngine:
    def restore_registers(self, registers): self.registers = registers
    def close(self): pass

assert "qmpd.vcpu.engine" not in sys.modules
sys.meta_path.insert(0, HoldEngineImport())
manager = VCPUManager(LoopBridge(), 16 << 20)
runner = manager.add(0, 0, FakeEngine, paused=True)
runner.load_registers(object())
assert importing.wait(30), "the vCPU thread started loading the engine"
resumed = threading.Event()
threading.Thread(target=lambda: (runner.resume(), resumed.set()), daemon=True).start()
print("resumed while the import was held:", resumed.wait(10), flush=True)
may_import.set()
manager.shutdown()
"""


def test_the_loop_takes_a_vcpus_lock_while_that_vcpu_imports_unicorn() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "resumed while the import was held: True"
