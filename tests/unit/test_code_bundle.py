"""qmpd/code_bundle.py: modules load from the bundle only while it matches their sources and interpreter.

The subprocess tests run a copy of the package (so its files can be edited and its bundle rewritten)
in a fresh interpreter, as a start does.
"""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qmpd import code_bundle
from tests.helpers import REPO

#: Prints, for the module named by argv[1]: its loader's class, its __file__, and whether the
#: bundle's finder is installed.
PROBE = (
    "import importlib, sys; import qmpd; from qmpd.code_bundle import BundleFinder; "
    "module = importlib.import_module(sys.argv[1]); "
    "print(type(module.__spec__.loader).__name__, module.__file__, "
    "any(isinstance(f, BundleFinder) for f in sys.meta_path))"
)


def _index(bundle: bytes) -> tuple[dict[str, Any], bytes]:
    """A bundle's index and its code."""
    length = int.from_bytes(bundle[: code_bundle.LENGTH_BYTES], "little")
    index = marshal.loads(bundle[code_bundle.LENGTH_BYTES : code_bundle.LENGTH_BYTES + length])
    return index, bundle[code_bundle.LENGTH_BYTES + length :]


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of qmpd's sources (no caches) with its code bundle written."""
    shutil.copytree(REPO / "qmpd", tmp_path / "qmpd", ignore=shutil.ignore_patterns("__pycache__", "*.marshal", "*.so"))
    code_bundle.write(str(tmp_path / "qmpd" / "code-bundle.marshal"), str(tmp_path / "qmpd"))
    return tmp_path


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python args`` with the copy at ``root`` as the only qmpd on the path."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=60)


def _load(root: Path, module: str) -> list[str]:
    out = _run(root, "-c", PROBE, module)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_module_names() -> None:
    assert code_bundle.module_name(os.path.join("cpu", "models.py")) == ("qmpd.cpu.models", False)
    assert code_bundle.module_name(os.path.join("cpu", "__init__.py")) == ("qmpd.cpu", True)
    assert code_bundle.module_name("daemon.py") == ("qmpd.daemon", False)


def test_the_bundle_holds_every_module_but_the_package_itself() -> None:
    made, code = _index(code_bundle.build())
    sources = {
        os.path.relpath(os.path.join(directory, file), REPO / "qmpd")
        for directory, _, files in os.walk(REPO / "qmpd")
        for file in files
        if file.endswith(".py")
    }
    assert sorted(entry[0] for entry in made["modules"].values()) == sorted(sources - {"__init__.py"})
    assert made["interpreter"] == code_bundle.interpreter()
    assert made["modules"]["qmpd.qom"][1] is True  # a package
    assert made["modules"]["qmpd.qom.object"][1] is False
    _, _, _, _, offset, length = made["modules"]["qmpd.errors"]
    assert marshal.loads(code[offset : offset + length]).co_filename == str(REPO / "qmpd" / "errors.py")


def test_a_fresh_bundle_serves_modules_and_packages_with_their_files(package_copy: Path) -> None:
    loader, file, installed = _load(package_copy, "qmpd.qom.object")
    assert (loader, installed) == ("_BundleLoader", "True")
    assert file == str(package_copy / "qmpd" / "qom" / "object.py")
    loader, file, _ = _load(package_copy, "qmpd.qom")
    assert loader == "_BundleLoader"
    assert file == str(package_copy / "qmpd" / "qom" / "__init__.py")


def test_an_edited_source_is_imported_from_itself(package_copy: Path) -> None:
    source = package_copy / "qmpd" / "inttypes.py"
    source.write_text(source.read_text() + "\nEDITED = True\n")
    assert _run(package_copy, "-c", "import qmpd.inttypes as m; print(m.EDITED)").stdout.strip() == "True"
    assert _load(package_copy, "qmpd.inttypes")[0] == "SourceFileLoader"
    assert _load(package_copy, "qmpd.errors")[0] == "_BundleLoader"  # the others still from the bundle


def test_a_deleted_source_is_not_served_from_the_bundle(package_copy: Path) -> None:
    (package_copy / "qmpd" / "inttypes.py").unlink()
    result = _run(package_copy, "-c", "import qmpd.inttypes")
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'qmpd.inttypes'" in result.stderr


@pytest.mark.parametrize("damage", ["another interpreter", "garbage", "wrong shape"])
def test_a_bundle_from_elsewhere_or_damaged_is_ignored(package_copy: Path, damage: str) -> None:
    path = package_copy / "qmpd" / "code-bundle.marshal"
    made, code = _index(path.read_bytes())
    if damage == "another interpreter":
        made["interpreter"] = ["3.10.0 (other build)", "cpython-310", 4, 0]
    elif damage == "wrong shape":
        made["modules"] = list(made["modules"])
    index = marshal.dumps(made)
    if damage == "garbage":
        path.write_bytes(b"\xff\x00not marshal" * 10)
    else:
        path.write_bytes(len(index).to_bytes(code_bundle.LENGTH_BYTES, "little") + index + code)
    loader, _, installed = _load(package_copy, "qmpd.errors")
    assert (loader, installed) == ("SourceFileLoader", "False")


def test_a_fifo_in_the_bundles_place_does_not_hang_the_import(package_copy: Path) -> None:
    path = package_copy / "qmpd" / "code-bundle.marshal"
    path.unlink()
    os.mkfifo(path)
    loader, _, installed = _load(package_copy, "qmpd.errors")  # _run's timeout fails the test on a hang
    assert (loader, installed) == ("SourceFileLoader", "False")


def test_an_entry_pointing_outside_the_file_is_not_served(package_copy: Path) -> None:
    path = package_copy / "qmpd" / "code-bundle.marshal"
    made, code = _index(path.read_bytes())
    relative, is_package, size, mtime_ns, _, _ = made["modules"]["qmpd.errors"]
    made["modules"]["qmpd.errors"] = (relative, is_package, size, mtime_ns, len(code), 1 << 40)
    made["modules"]["qmpd.inttypes"] = ("inttypes.py", "not a bool", "not a size")
    index = marshal.dumps(made)
    path.write_bytes(len(index).to_bytes(code_bundle.LENGTH_BYTES, "little") + index + code)
    assert _load(package_copy, "qmpd.errors")[0] == "SourceFileLoader"
    assert _load(package_copy, "qmpd.inttypes")[0] == "SourceFileLoader"
    assert _load(package_copy, "qmpd.qom.object")[0] == "_BundleLoader"


def test_tracebacks_from_bundled_code_show_source_lines(package_copy: Path) -> None:
    source = package_copy / "qmpd" / "qobject" / "parser.py"
    code = "from qmpd.qobject.parser import parse_string; parse_string(None)"
    stderr = _run(package_copy, "-c", code).stderr.splitlines()
    where = next(index for index, line in enumerate(stderr) if f'File "{source}"' in line)
    line_number = int(stderr[where].split(", line ")[1].split(",")[0])
    assert stderr[where + 1].strip() == source.read_text().splitlines()[line_number - 1].strip()
