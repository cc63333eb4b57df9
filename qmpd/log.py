"""Logging: structlog to stderr, one event per line, JSON or console.

structlog (and what its package imports: datetime, uuid and platform, pickle, its traceback and
console code) costs a fresh interpreter tens of milliseconds, so it is imported with the first line
actually written, not at start: ``get_logger`` hands out a stand-in that drops the calls below the
configured level by itself and becomes structlog's logger at the first call it lets through.  A
daemon at ``--log-level warning`` that has nothing to warn about never imports it, and neither does one
whose log goes to /dev/null (``-daemonize`` without ``--log-file``, as libvirt probes an emulator): no
line would be kept, so none is made.

While the daemon starts, lines are held (``hold``) and written a moment after it is ready
(``release``, which loads structlog whether or not a line came), each with the time it was made: the
first clients' commands do not wait for structlog's import.  At most HELD_LINES_MAX lines are held;
the next one releases them all (or, if structlog cannot be loaded then, is counted and reported).
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

from qmpd.config import LogFormat

#: The standard library's numeric levels (as logging.DEBUG ... logging.ERROR), without importing it.
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
#: Each logger method's level; exception() logs at error, as structlog's.
_METHODS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "exception": 40}
#: Above every method's level: nothing is logged.
_DISCARD = 100
#: Lines held while the daemon starts, at most (README, Limits and bounds).
HELD_LINES_MAX = 256


class _Setup:
    """What setup_logging chose, applied to structlog with the first line; until it is called (a
    test's process), every call goes through to structlog as it is configured."""

    level = 0
    log_format = LogFormat.CONSOLE
    stream: TextIO | None = None
    pending = False
    #: Lines made since hold(), waiting for release(): (logger, method, event, args, kw).  vCPU
    #: threads log too, hence the lock.
    held: list[tuple[Logger, str, str, tuple[Any, ...], dict[str, Any]]] | None = None
    held_lock = threading.Lock()
    #: Lines lost because the held ones reached HELD_LINES_MAX while structlog could not be loaded.
    dropped = 0


def hold() -> None:
    """Keep the lines made from now on until release() (the daemon's start-up)."""
    with _Setup.held_lock:
        if _Setup.held is None:
            _Setup.held = []


def release(*, load: bool = True) -> bool:
    """Load structlog (with ``load``, whether or not a line was held), then write the held lines in
    order, each with its own time; later lines are written at once.

    Loading structlog here, at a time the daemon chooses, means no later line has to import it when
    the process may be out of file descriptors.  False when it cannot be loaded now (EMFILE): the
    lines stay held, and the caller tries again later.  At exit (``load`` False) it is loaded only
    for lines that are held.
    """
    if _Setup.level < _DISCARD and (load or _Setup.held):
        try:
            _structlog()
        except (ImportError, OSError):
            return False
    with _Setup.held_lock:
        held, _Setup.held = _Setup.held, None
        dropped, _Setup.dropped = _Setup.dropped, 0
    for logger, method, event, args, kw in held or ():
        logger._write(method, event, args, kw)
    if dropped:
        get_logger("qmpd.log").warning("log.lines_dropped", count=dropped, bound=HELD_LINES_MAX)
    return True


def _held_time(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A held line's timestamp is when it was made (as TimeStamper(fmt="iso", utc=True) writes it)."""
    made = event_dict.pop("_qmpd_made", None)
    if made is not None:
        import datetime

        when = datetime.datetime.fromtimestamp(made, tz=datetime.UTC)
        event_dict["timestamp"] = when.isoformat().replace("+00:00", "Z")
    return event_dict


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
                _held_time,
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
        if _Setup.held is not None:
            with _Setup.held_lock:
                held = _Setup.held
                if held is not None and len(held) < HELD_LINES_MAX:
                    if kw.get("exc_info") is True:  # the exception being handled now, not at release
                        kw["exc_info"] = sys.exc_info()
                    held.append((self, method, event, args, {**kw, "_qmpd_made": time.time()}))
                    return
            if not release():  # the bound is reached: write them all now if structlog can be loaded
                with _Setup.held_lock:
                    _Setup.dropped += 1
                return
        self._write(method, event, args, kw)

    def _write(self, method: str, event: str, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
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
