"""qmpd's own modules' compiled code in one file, so that a start imports them without the file system.

Importing a module from its ``.pyc`` costs ~0.15 ms on a 2-core VM beyond running its code: finding
it among its package's files, statting the source, opening, reading and checking the ``.pyc``.  A
``-S`` start imports ~95 of qmpd's modules, a probe ~110: ~15 ms, as much as the interpreter's own
start.  ``python -m qmpd.caches`` (make's install, test, run and bench steps, the Dockerfile)
writes every module's code into ``code-bundle.marshal`` (git-ignored) after a small index, and
``qmpd/__init__.py`` puts a finder for them first on ``sys.meta_path``: a start reads the index and
then only the code of the modules it imports (from the file it opened: a bundle rewritten meanwhile
is a new file, and this one stays as it was).  Like a ``.pyc`` the file is a cache and never a
second copy of the code: a module is loaded from it only while its source has the size and mtime
it was compiled from, by the interpreter (version and ``-O`` level) that compiled it; any other
module, or any mismatch, is imported the usual way.  Modules keep their ``__file__``, their
tracebacks' source lines and their package data (the loader is a SourceFileLoader).
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

import marshal
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec, SourceFileLoader
from stat import S_ISREG
from types import CodeType, ModuleType
from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
#: Where the bundle lives (git-ignored).
BUNDLE = os.path.join(_PACKAGE_DIR, "code-bundle.marshal")
#: The package the bundle holds; its own __init__ is imported the usual way (it installs the finder).
PACKAGE = "qmpd"
#: One module: its source below the package directory, whether it is a package, the source's size
#: and mtime (ns) when compiled, and where its marshalled code is (offset after the index, length).
Entry = tuple[str, bool, int, int, int, int]
#: The file starts with the index's length in this many bytes (little-endian), then the index.
LENGTH_BYTES = 8


def interpreter() -> list[Any]:
    """What compiled code depends on: the interpreter's version and build, its bytecode cache tag,
    marshal's format and the optimisation level (-O drops asserts at compile time)."""
    return [sys.version, sys.implementation.cache_tag, marshal.version, sys.flags.optimize]


class _BundleLoader(SourceFileLoader):
    """A source file's loader whose code comes from the bundle (checked fresh by the finder)."""

    def __init__(self, fullname: str, path: str, bundle_fd: int, offset: int, length: int) -> None:
        super().__init__(fullname, path)
        self._where = (bundle_fd, offset, length)

    def get_code(self, fullname: str) -> CodeType:
        fd, offset, length = self._where
        try:
            code = marshal.loads(os.pread(fd, length, offset))
        except (OSError, ValueError, EOFError, TypeError):
            code = None
        if not isinstance(code, CodeType):  # a damaged bundle: compile the source as Python would
            return super().get_code(fullname)  # type: ignore[return-value]
        return code


class BundleFinder:
    """The meta-path finder for the bundle's modules: each found only while its source is unchanged."""

    def __init__(self, package_dir: str, entries: dict[str, Entry], bundle_fd: int, code_start: int, size: int) -> None:
        self._package_dir = package_dir
        self._entries = entries
        self._bundle_fd = bundle_fd
        self._code_start = code_start
        self._size = size

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """The module's spec with the bundle's loader, or None (the next finder imports it)."""
        entry = self._entries.get(fullname)
        if entry is None:
            return None
        try:  # a damaged entry is no entry
            relative, is_package, size, mtime_ns, offset, length = entry
            source = os.path.join(self._package_dir, relative)
            stat = os.stat(source)
            offset += self._code_start
            if not 0 < offset <= offset + length <= self._size:
                return None
        except (TypeError, ValueError, OSError):
            return None
        if stat.st_size != size or stat.st_mtime_ns != mtime_ns:
            return None
        loader = _BundleLoader(fullname, source, self._bundle_fd, offset, length)
        spec = ModuleSpec(fullname, loader, origin=source, is_package=is_package)
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [os.path.dirname(source)]
        return spec


def install(package_dir: str = _PACKAGE_DIR, bundle: str = BUNDLE) -> BundleFinder | None:
    """Put the bundle's finder first on sys.meta_path if the bundle was written by this interpreter.

    The bundle stays open (close-on-exec) for the process's life: its modules' code is read when each
    is imported."""
    try:
        fd = os.open(bundle, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO there must not hang the import
    except OSError:
        return None
    try:
        stat = os.fstat(fd)
        size = stat.st_size
        length = int.from_bytes(os.pread(fd, LENGTH_BYTES, 0), "little")
        regular = S_ISREG(stat.st_mode)
        index = marshal.loads(os.pread(fd, length, LENGTH_BYTES)) if regular and length <= size else None
    except (OSError, ValueError, EOFError, TypeError):
        index = None
    entries = index.get("modules") if isinstance(index, dict) and index.get("interpreter") == interpreter() else None
    if not isinstance(entries, dict):
        os.close(fd)
        return None
    finder = BundleFinder(package_dir, entries, fd, LENGTH_BYTES + length, size)
    sys.meta_path.insert(0, finder)
    return finder


def module_name(relative: str) -> tuple[str, bool]:
    """The dotted name of the module at ``relative`` (a .py path below the package) and whether it is
    a package."""
    parts = relative[: -len(".py")].split(os.sep)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts]), is_package


def build(package_dir: str = _PACKAGE_DIR) -> bytes:
    """The bundle of every module below ``package_dir`` (but the package's own __init__), compiled."""
    sources: dict[str, tuple[str, bool, int, int]] = {}
    codes: list[bytes] = []
    for directory, subdirectories, files in os.walk(package_dir):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        for file in sorted(files):
            if not file.endswith(".py"):
                continue
            source = os.path.join(directory, file)
            relative = os.path.relpath(source, package_dir)
            if relative == "__init__.py":
                continue
            stat = os.stat(source)  # before reading: a later edit leaves the entry stale, never wrong
            with open(source, "rb") as stream:
                text = stream.read()
            name, is_package = module_name(relative)
            sources[name] = (relative, is_package, stat.st_size, stat.st_mtime_ns)
            codes.append(marshal.dumps(compile(text, source, "exec", dont_inherit=True)))
    modules: dict[str, Entry] = {}
    offset = 0
    for name, marshalled in zip(sources, codes, strict=True):
        modules[name] = (*sources[name], offset, len(marshalled))
        offset += len(marshalled)
    index = marshal.dumps({"interpreter": interpreter(), "modules": modules})
    return len(index).to_bytes(LENGTH_BYTES, "little") + index + b"".join(codes)


def write(path: str = BUNDLE, package_dir: str = _PACKAGE_DIR) -> None:
    """Write the bundle (atomically: a start reading it meanwhile sees the old one or the new one)."""
    from qmpd.cache_file import write_atomically

    write_atomically(path, build(package_dir), ".code-bundle.")
