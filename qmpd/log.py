"""Logging: structlog to stderr, one event per line, JSON or console.

structlog (and what its package imports: datetime, uuid and platform, pickle, its traceback and
console code) costs a fresh interpreter tens of milliseconds, so it is imported with the first line
actually written, not at start: ``get_logger`` hands out a stand-in that drops the calls below the
configured level by itself and becomes structlog's logger at the first call it lets through.  A
daemon at ``--log-level warning`` that has nothing to warn about never imports it, and neither does one
whose log goes to /dev/null (``-daemonize`` without ``--log-file``, as libvirt probes an emulator): no
line would be kept, so none is made.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Any, TextIO

from qmpd.config import LogFormat

#: The standard library's numeric levels (as logging.DEBUG ... logging.ERROR), without importing it.
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
#: Each logger method's level; exception() logs at error, as structlog's.
_METHODS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "exception": 40}
#: Above every method's level: nothing is logged.
_DISCARD = 100


class _Setup:
    """What setup_logging chose, applied to structlog with the first line; until it is called (a
    test's process), every call goes through to structlog as it is configured."""

    level = 0
    log_format = LogFormat.CONSOLE
    stream: TextIO | None = None
    pending = False


def setup_logging(log_format: LogFormat, level: str, path: str | None = None) -> None:
    """Configure logging once for the process (stderr, or ``path`` when given, opened now)."""
    _Setup.stream = open(path, "a", buffering=1, encoding="utf-8") if path else sys.stderr  # noqa: SIM115 - lives as long as the process
    _Setup.level = _DISCARD if _is_null_device(_Setup.stream) else _LEVELS[level]
    _Setup.log_format = log_format
    _Setup.pending = True


def _is_null_device(stream: TextIO) -> bool:
    """True when ``stream`` writes to /dev/null (the same character device), where every line is lost."""
    try:
        written, null = os.fstat(stream.fileno()), os.stat(os.devnull)
    except (OSError, ValueError):  # no file descriptor (a test's StringIO), or no /dev/null
        return False
    return stat.S_ISCHR(written.st_mode) and stat.S_ISCHR(null.st_mode) and written.st_rdev == null.st_rdev


def _structlog() -> Any:
    """structlog, configured as setup_logging said (imported and configured on the first call)."""
    import structlog

    if _Setup.pending:
        _Setup.pending = False
        renderer: structlog.typing.Processor
        if _Setup.log_format is LogFormat.JSON:
            renderer = structlog.processors.JSONRenderer()
        else:
            # Plain tracebacks: the same lines whether or not rich happens to be installed (qmpd.main keeps it out).
            renderer = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(_Setup.level),
            logger_factory=structlog.PrintLoggerFactory(file=_Setup.stream or sys.stderr),
            cache_logger_on_first_use=True,
        )
    return structlog


class Logger:
    """structlog's ``get_logger(name).bind(**context)``, made when a call at or above the level comes."""

    __slots__ = ("_context", "_name", "_real")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}
        self._real: Any = None

    def bind(self, **context: Any) -> Logger:
        """A logger whose lines carry ``context`` too (structlog's bind)."""
        return Logger(self._name, {**self._context, **context})

    def _emit(self, method: str, event: str, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        if _METHODS[method] < _Setup.level:
            return
        if self._real is None:
            real = _structlog().get_logger(self._name)
            self._real = real.bind(**self._context) if self._context else real
        getattr(self._real, method)(event, *args, **kw)

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        self._emit("debug", event, args, kw)

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self._emit("info", event, args, kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self._emit("warning", event, args, kw)

    def error(self, event: str, *args: Any, **kw: Any) -> None:
        self._emit("error", event, args, kw)

    def exception(self, event: str, *args: Any, **kw: Any) -> None:
        """An error line with the exception being handled (structlog's exc_info=True)."""
        kw.setdefault("exc_info", True)
        self._emit("exception", event, args, kw)


def get_logger(name: str) -> Logger:
    """The module logger ``name`` (use as structlog's; structlog itself comes with its first line)."""
    return Logger(name)
