"""Who may talk to the HTTP front from a browser: the Host and Origin checks.

A page on any web site can make the visitor's browser connect to a loopback port, and a WebSocket
is not bound by the same-origin policy; DNS rebinding also lets a page read responses by pointing
its own name at 127.0.0.1.  Two checks close both doors:

- **Host** (without a token): the ``Host`` header must name this server (its bound address,
  ``localhost``, ``127.0.0.1`` or ``[::1]``, with no port or the bound port) or an allowed origin.
  A rebinding page's requests carry its own name.  With a token the check is skipped: the token is
  the protection (a rebinding page does not know it), and a front beyond loopback is reached by
  names and addresses (port mappings, proxies) that qmpd cannot know.
- **Origin**: a request without one is not from a browser page (curl, scripts) and passes; one
  with an ``Origin`` must come from the front's own origin (``http://`` + the Host it was sent to)
  or from an origin given with ``--http-allow-origin``.
"""

from __future__ import annotations

from dataclasses import dataclass

from qmpd.origins import normalize_origin

#: Names that always mean this machine's loopback.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


#: Ports a browser leaves out of an Origin.
def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host.lower()


def _without_port(authority: str) -> str:
    if authority.endswith("]") or ":" not in authority:
        return authority
    return authority.rsplit(":", 1)[0]


@dataclass(frozen=True)
class AccessPolicy:
    """The Host and Origin rules of one front (see the module docstring)."""

    #: The ``--http`` host as given.
    bound_host: str
    #: Whether a bearer token is required (then the Host check is skipped).
    token_required: bool
    #: Normalized ``--http-allow-origin`` origins.
    allowed_origins: frozenset[str] = frozenset()

    def host_allowed(self, host: str | None, port: int) -> bool:
        """Whether a request whose ``Host`` header is ``host`` may be served by the front on ``port``.

        A request without a Host header (HTTP/1.0 tools) is not a browser's and passes."""
        if self.token_required or host is None:
            return True
        names = {_bracketed(self.bound_host), *LOOPBACK_NAMES}
        accepted = names | {f"{name}:{port}" for name in names}
        for origin in self.allowed_origins:
            authority = origin.split("://", 1)[1]
            accepted |= {authority, _without_port(authority)}
        return host.strip().lower() in accepted

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a request with this ``Origin`` header, sent to this ``Host``, may go on."""
        if origin is None:
            return True
        normalized = normalize_origin(origin)
        if normalized is None:
            return False
        if normalized in self.allowed_origins:
            return True
        return host is not None and normalized == normalize_origin(f"http://{host.strip()}")
