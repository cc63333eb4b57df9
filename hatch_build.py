"""Build hook: compile qmpd's Unicorn block hook (qmpd/vcpu/_blockhook.c) into the wheel.

The shared object has no Python API and no link-time dependency: it is
loaded with ctypes, and Unicorn's uc_emu_stop is handed to it at run time.
Without a C compiler the build still succeeds; qmpd then falls back to
Unicorn's (slower) counted slices.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = os.path.join("qmpd", "vcpu", "_blockhook.c")
TARGET = os.path.join("qmpd", "vcpu", "_blockhook.so")


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        source = os.path.join(self.root, SOURCE)
        target = os.path.join(self.root, TARGET)
        if compiler is None:
            self.app.display_warning("no C compiler: qmpd will run vCPUs with counted slices")
            return
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", target, source], check=True)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["force_include"][target] = TARGET
