"""The errors a QMP command can fail with, and how they look on the wire.

::

    QMPError                 a command failed: {"error": {"class", "desc"}}
    ├── GenericError         almost everything (QEMU's default class)
    ├── CommandNotFound      unknown command, or not available in this mode
    ├── DeviceNotActive      a device exists but is not active
    ├── DeviceNotFound       no device, object or type by that name
    └── KVMMissingCap        the accelerator lacks a capability

One class per QMP error class (qapi/error.json).  Handlers raise them; the
dispatcher turns them into replies with :func:`error_to_wire` and nothing
else.  Any other exception escaping a handler is a bug: it is logged with its
traceback and answered as a GenericError, never shown to the client.
"""

from __future__ import annotations

from typing import ClassVar


class QMPError(Exception):
    """A command failed in a way the client should be told about."""

    #: The QMP error class name sent on the wire.
    error_class: ClassVar[str] = "GenericError"

    def __init__(self, desc: str) -> None:
        super().__init__(desc)
        #: Human-readable text, identical to QEMU's where QEMU has the same error.
        self.desc = desc


class GenericError(QMPError):
    """QEMU's catch-all error class."""

    error_class = "GenericError"


class CommandNotFound(QMPError):
    """The command does not exist or cannot run in the current mode."""

    error_class = "CommandNotFound"


class DeviceNotActive(QMPError):
    """A device is present but not active."""

    error_class = "DeviceNotActive"


class DeviceNotFound(QMPError):
    """No device, object, path or type matches."""

    error_class = "DeviceNotFound"


class KVMMissingCap(QMPError):
    """The accelerator lacks a required capability."""

    error_class = "KVMMissingCap"


def error_to_wire(error: QMPError) -> dict[str, str]:
    """The ``error`` member of a reply."""
    return {"class": error.error_class, "desc": error.desc}
