"""The QEMU release qmpd speaks for, and its own package string.

Clients read ``query-version`` (libvirt needs >= 4.2.0); qmpd reports the
QEMU release whose QMP behaviour it reproduces and names itself in
``package``.
"""

from __future__ import annotations

from typing import Any

from qmpd import __version__

#: The QEMU release whose behaviour qmpd reproduces (measured against Debian's 7.2.22).
QEMU_MAJOR, QEMU_MINOR, QEMU_MICRO = 7, 2, 22
QEMU_VERSION = f"{QEMU_MAJOR}.{QEMU_MINOR}.{QEMU_MICRO}"
#: ``package`` of query-version and of the greeting.
PACKAGE = f"qmpd {__version__}"


#: QMP capabilities offered in the greeting (QEMU offers oob on every socket monitor).
OFFERED_CAPABILITIES = ("oob",)


def version_info() -> dict[str, Any]:
    """QAPI ``VersionInfo``."""
    return {"qemu": {"major": QEMU_MAJOR, "minor": QEMU_MINOR, "micro": QEMU_MICRO}, "package": PACKAGE}


def greeting() -> dict[str, Any]:
    """The message a client gets on connect."""
    return {"QMP": {"version": version_info(), "capabilities": list(OFFERED_CAPABILITIES)}}
