"""The ``-fw_cfg`` options: checked in QEMU 7.2's order with its texts, their files read once at start.

The contents are configuration, as in QEMU: a migration target is started with the same options
and reads its own files.  They are bounded (MAX_CONTENTS in all, README "Limits and bounds") and
take at most FILE_SLOTS directory entries; QEMU has no size bound and aborts past its slots.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

import os
import stat
from collections.abc import Sequence

from qmpd.config import FwCfgOption
from qmpd.devices.fw_cfg import FILE_SLOTS, MAX_NAME

#: All -fw_cfg contents together (strings and files).
MAX_CONTENTS = 16 << 20
_TOO_MUCH = f"qmpd holds at most {MAX_CONTENTS >> 20} MiB of -fw_cfg contents in all"


class FwCfgError(ValueError):
    """A -fw_cfg option QEMU (or qmpd's bound) refuses; the text names the option.

    ``warnings`` are those of the options before it, which QEMU has printed by then.
    """

    def __init__(self, text: str, warnings: Sequence[str] = ()) -> None:
        super().__init__(text)
        self.warnings = tuple(warnings)


def load_fw_cfg_files(
    options: Sequence[FwCfgOption], available: bool
) -> tuple[tuple[tuple[str, bytes], ...], tuple[str, ...]]:
    """The files (name, contents) and QEMU's warnings (each with its option) for these options."""
    files: dict[str, bytes] = {}
    warnings: list[str] = []
    try:
        _load(options, available, files, warnings)
    except FwCfgError as exc:
        raise FwCfgError(str(exc), warnings) from None
    return tuple(files.items()), tuple(warnings)


def _load(options: Sequence[FwCfgOption], available: bool, files: dict[str, bytes], warnings: list[str]) -> None:
    total = 0
    for option in options:
        where = f"-fw_cfg {option.arg}"
        if not available:
            raise FwCfgError(f"{where}: fw_cfg device not available")
        given = [bool(option.file), bool(option.string), bool(option.gen_id)]
        if not option.name or sum(given) != 1:
            raise FwCfgError(f"{where}: name, plus exactly one of file, string and gen_id, are needed")
        if len(option.name.encode()) > MAX_NAME:
            raise FwCfgError(f"{where}: name too long (max. {MAX_NAME} char)")
        if option.gen_id:
            # qmpd creates no vmgenid objects (-object is accepted and ignored).
            raise FwCfgError(f"{where}: Cannot find object ID '{option.gen_id}'")
        if not option.name.startswith("opt/"):
            warnings.append(f'{where}: warning: externally provided fw_cfg item names should be prefixed with "opt/"')
        if option.string:
            data = option.string.encode()  # without its NUL, as QEMU
            if total + len(data) > MAX_CONTENTS:
                raise FwCfgError(f"{where}: {_TOO_MUCH}")
        else:
            data = _read(where, option.file, MAX_CONTENTS - total)
        if option.name in files:
            raise FwCfgError(f"{where}: duplicate fw_cfg file name: {option.name}")
        if len(files) == FILE_SLOTS:
            raise FwCfgError(f"{where}: fw_cfg has {FILE_SLOTS} file slots (x-file-slots), all taken")
        files[option.name] = data
        total += len(data)


def _read(where: str, path: str, most: int) -> bytes:
    """A file's contents with GLib's error texts (g_file_get_contents, as QEMU reads it), at most ``most`` bytes."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (QEMU's start hangs there; qmpd's may not).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise FwCfgError(f"{where}: can't load {path}: Failed to open file “{path}”: {exc.strerror}") from None
    if stat.S_ISFIFO(os.fstat(fd).st_mode) or stat.S_ISSOCK(os.fstat(fd).st_mode):
        os.close(fd)
        raise FwCfgError(f"{where}: can't load {path}: a FIFO or socket could block the start: not read")
    os.set_blocking(fd, True)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = os.read(fd, min(1 << 20, most + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > most:
                raise FwCfgError(f"{where}: can't load {path}: {_TOO_MUCH}")
    except OSError as exc:
        raise FwCfgError(f"{where}: can't load {path}: Error reading file “{path}”: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)
