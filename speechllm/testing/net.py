"""A free local TCP port, for tests and benchmarks that start a process group or a server."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the OS picks it; another process could
    still take it before the caller binds, which is fine for short-lived local runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
