"""Local port checks shared by the docker driver, the local stack and the simulators."""

from __future__ import annotations

import socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on, or holds a bind of, ``host:port``.

    Connections a stopped server closed linger in TIME_WAIT for a minute; with
    SO_REUSEADDR they do not count, only a listener or a bind does.
    """
    with socket.socket(_family(host)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port of ``host`` the kernel says is free now (another process may take it later)."""
    with socket.socket(_family(host)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
