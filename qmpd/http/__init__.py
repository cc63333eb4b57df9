"""The service front: QMP over WebSocket, a REST API, Prometheus metrics, health checks and a live dashboard.

Everything here runs on the daemon's event loop and reaches the machine the way a monitor does: QMP
sessions are the same Session objects as on Unix sockets, and REST requests run QMP commands through
the same Dispatcher (so the same checks, locks, events and logs apply).
"""
