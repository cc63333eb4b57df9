"""The HTTP front's aiohttp application: routes, bearer-token check, limits, start and stop.

Routes: ``/qmp`` (QMP over WebSocket), ``/api/v1/...`` (REST, rest.py), ``/api/v1/openapi.json``,
``/api/v1/live`` (a WebSocket on which the server pushes vCPU counters twice a second, for the
dashboard), ``/metrics``, ``/healthz``, ``/readyz``, and the dashboard at ``/`` with ``/static/``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import hdrs, web

from qmpd.dispatch import Dispatcher
from qmpd.events import EventBus
from qmpd.http.access import AccessPolicy
from qmpd.http.metrics import CONTENT_TYPE, Metrics
from qmpd.http.rest import RestAPI, error_response
from qmpd.http.view import live_sample
from qmpd.http.websocket import CheckedWebSocketResponse, SessionFactory, serve_qmp
from qmpd.log import get_logger
from qmpd.machine.machine import Machine
from qmpd.protocol.accept import Acceptor, ThrottledLog
from qmpd.protocol.listeners import open_tcp_listeners

log = get_logger(__name__)

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
#: Largest request body (REST bodies are a few bytes).
MAX_BODY = 64 << 10
#: Seconds between two pushes on /api/v1/live.
LIVE_INTERVAL = 0.5
#: Methods that change nothing; every other method must send JSON, if anything.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: What an HTML form can send across sites without asking (the CORS-safelisted body types).
FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
#: Charsets a JSON body may declare (RFC 8259: JSON exchanged between systems is UTF-8).
JSON_CHARSETS = frozenset({"utf-8", "utf8"})
#: HTTP connections open at once (WebSockets included); more are closed as soon as accepted.
MAX_CONNECTIONS = 512
#: Seconds a connection may go without a complete request: idle keep-alive, or headers sent
#: a byte at a time (slowloris).  aiohttp's keep-alive timer does both: it runs from the
#: connection's start and after each response, and closes the connection if no request is whole.
IDLE_TIMEOUT = 5.0
#: Pending connections the kernel queues for the HTTP front (asyncio's create_server uses 100).
BACKLOG = 128

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpFront:
    """One aiohttp server on ``--http HOST:PORT``, serving the daemon's machine."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        token: str | None,
        machine: Machine,
        dispatcher: Dispatcher,
        events: EventBus,
        make_session: SessionFactory,
        sessions_open: Callable[[], int],
        accepting: Callable[[], bool],
        max_sessions: int = 64,
        allow_origins: tuple[str, ...] = (),
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.host, self.port = host, port
        self._token = token
        self._access = AccessPolicy(host, token_required=token is not None, allowed_origins=frozenset(allow_origins))
        self._machine = machine
        self._make_session = make_session
        self._accepting = accepting
        self._sessions_open = sessions_open
        self._max_sessions = max_sessions
        #: The connection bound in force: ``max_connections``, and at most half the soft fd limit,
        #: so that HTTP clients alone can never take every fd (the QMP monitors need theirs).
        self.max_connections = min(max_connections, _half_the_fd_limit())
        self._idle_timeout = idle_timeout
        self._listening: list[socket.socket] = []
        self._accepting_tasks: list[asyncio.Task[None]] = []
        self.metrics = Metrics(dispatcher, machine, sessions_open)
        self.rest = RestAPI(dispatcher, events, machine)
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.app = web.Application(
            client_max_size=MAX_BODY, middlewares=[self._json_errors, self._check_access, self._authorize]
        )
        self.app.add_routes(
            [
                web.get("/qmp", self._qmp),
                web.get("/api/v1/live", self._live),
                web.get("/api/v1/openapi.json", self._openapi),
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/", self._dashboard),
                web.static("/static", STATIC),
                *self.rest.routes(),
            ]
        )

    async def start(self) -> None:
        """Listen, and accept through qmpd's own loop: fd exhaustion pauses it, and the connection bound holds."""
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, keepalive_timeout=self._idle_timeout
        )
        await self._runner.setup()
        self._listening = open_tcp_listeners(self.host, self.port, BACKLOG)
        self.port = self._listening[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._accepting_tasks = [loop.create_task(self._accept_loop(sock)) for sock in self._listening]
        log.info(
            "http.listening",
            address=f"http://{self.host}:{self.port}/",
            token=self._token is not None,
            max_connections=self.max_connections,
            idle_timeout=self._idle_timeout,
        )

    async def _accept_loop(self, listening: socket.socket) -> None:
        """Hand accepted connections to aiohttp, closing those beyond ``max_connections`` at once."""
        assert self._runner is not None and self._runner.server is not None
        server = self._runner.server
        loop = asyncio.get_running_loop()
        acceptor = Acceptor(listening, f"http:{self.port}")
        refused = ThrottledLog("http.connection_refused", max_connections=self.max_connections)
        while True:
            try:
                conn = await acceptor.accept()
            except OSError as exc:
                log.error("http.listener_failed", error=str(exc))
                return
            if len(server.connections) >= self.max_connections:
                conn.close()
                refused.warning()
                continue
            try:
                await loop.connect_accepted_socket(server, conn)
            except OSError as exc:
                conn.close()
                log.warning("http.connection_failed", error=str(exc))

    async def close(self) -> None:
        """Stop accepting, then close WebSockets and connections (aiohttp's shutdown)."""
        for task in self._accepting_tasks:
            task.cancel()
        await asyncio.gather(*self._accepting_tasks, return_exceptions=True)
        for sock in self._listening:
            sock.close()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- middleware ----------------------------------------------------------------------

    @web.middleware
    async def _check_access(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse what a web page could send on a visitor's behalf (access.py says why): a Host that is
        not this server, an Origin that is not its own or allowed, a state change whose body is not
        JSON (an HTML form can post text/plain or form data across sites, never application/json)."""
        host = request.headers.get(hdrs.HOST)
        if not self._access.host_allowed(host, self.port):
            return self._refuse(request, f"Host '{host}' does not name this server (http://{self.host}:{self.port})")
        origin = request.headers.get(hdrs.ORIGIN)
        if not self._access.origin_allowed(origin, host):
            return self._refuse(request, f"requests from origin '{origin}' are refused (see --http-allow-origin)")
        if request.method not in SAFE_METHODS:
            problem = _not_json(request)
            if problem is not None:
                return error_response("GenericError", problem, 415)
        return await handler(request)

    @staticmethod
    def _refuse(request: web.Request, desc: str) -> web.Response:
        log.warning("http.refused", peer=request.remote, method=request.method, path=request.path, reason=desc)
        return error_response("GenericError", desc, 403)

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """With a token, every request carries it: ``Authorization: Bearer T``, or ``?token=T`` (browsers'
        WebSockets cannot set headers).  The dashboard's own files and the health probes hold nothing
        secret and are open: a browser fetches the page's scripts without the token, a container
        runtime probes health without it."""
        if self._token is not None and not _open_path(request.path):
            given = request.headers.get("Authorization", "")
            supplied = given[7:] if given.startswith("Bearer ") else request.query.get("token", "")
            # Header bytes that are not UTF-8 arrive as surrogates: compare them as the bytes they were.
            if not hmac.compare_digest(_raw(supplied), _raw(self._token)):
                response = error_response("GenericError", "missing or wrong bearer token", 401)
                response.headers["WWW-Authenticate"] = 'Bearer realm="qmpd"'
                return response
        return await handler(request)

    @web.middleware
    async def _json_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """HTTP errors (404, 405, 413 ...) as JSON in QMP's error shape; a bug in qmpd as a logged 500
        with the same shape, never aiohttp's text page."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            return error_response("GenericError", f"request body larger than {MAX_BODY} bytes", 413)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response("GenericError", exc.reason, exc.status)
        except Exception:
            log.exception("http.bug", method=request.method, path=request.path)
            return error_response(
                "GenericError", f"Internal error while serving {request.path} (see the qmpd log)", 500
            )

    # -- handlers ------------------------------------------------------------------------

    async def _qmp(self, request: web.Request) -> web.StreamResponse:
        if self._sessions_open() >= self._max_sessions:
            log.warning("qmp.websocket.refused", peer=request.remote, max_sessions=self._max_sessions)
            return error_response("GenericError", f"too many QMP sessions (--max-sessions {self._max_sessions})", 503)
        return await serve_qmp(request, self._make_session, self._sockets)

    async def _live(self, request: web.Request) -> web.StreamResponse:
        ws = CheckedWebSocketResponse(max_msg_size=4096, heartbeat=30)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            while not ws.closed:
                await ws.send_str(json.dumps(live_sample(self._machine, time.monotonic())))
                try:
                    # Anything the client sends is ignored; a close ends the loop.
                    await ws.receive(timeout=LIVE_INTERVAL)
                except TimeoutError:
                    continue
        except ConnectionError:
            pass
        finally:
            self._sockets.discard(ws)
        return ws

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(HERE / "openapi.json", headers={"Content-Type": "application/json"})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        """The loop answers (this handler runs) and the machine's vCPU threads are alive."""
        dead = self._machine.cpu_slots.dead_vcpu_threads()
        body: dict[str, object] = {"status": "ok" if not dead else "failing"}
        if dead:
            body["dead_vcpu_threads"] = dead
        return web.json_response(body, status=200 if not dead else 503)

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        """Ready once the monitors listen and until the daemon starts exiting."""
        ready = self._accepting()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _dashboard(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")


def _not_json(request: web.Request) -> str | None:
    """Why a state-changing request's body is not acceptable, or None.  An empty body is fine unless
    it says it is a form's (``curl -X PUT`` sends no type, aiohttp's client application/octet-stream)."""
    if not request.body_exists and request.content_type not in FORM_TYPES:
        return None
    if request.content_type != "application/json":
        return f"the request body must be application/json, not '{request.content_type}'"
    charset = request.charset
    if charset is not None and charset.lower() not in JSON_CHARSETS:
        return f"the request body must be UTF-8 JSON, not charset '{charset}'"
    return None


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _half_the_fd_limit() -> int:
    """Half the soft fd limit now: the other half stays for monitors, files and the loop."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(1, soft // 2)


def _open_path(path: str) -> bool:
    return path in ("/", "/healthz", "/readyz") or path.startswith("/static/")


async def wait_closed(front: HttpFront) -> None:
    """Close the front, bounded in time (a stuck client must not hold the exit)."""
    try:
        await asyncio.wait_for(front.close(), timeout=5)
    except TimeoutError:
        log.warning("http.close_timeout")
