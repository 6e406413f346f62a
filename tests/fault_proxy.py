"""A fault-injecting HTTP proxy of the tests' own, on 127.0.0.1 in front of a real server.

Each request gets its own upstream connection (the proxy asks for ``Connection: close``),
so a rule decides per request: pass it through, answer it with a status, or cut it off
after some bytes of its body. Rules match the method and a path regex and may be
limited to a number of hits, after which the request passes as if the fault had ended.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field

_HEAD_LIMIT = 64 * 1024
_IO_TIMEOUT_S = 10.0


@dataclass
class Fault:
    method: str
    path: str
    # "status": answer ``status`` without asking upstream; "cut": forward ``cut_after``
    # bytes of the request body, then close both sides.
    kind: str = "status"
    status: int = 503
    cut_after: int = 0
    times: int | None = None
    # Every one of these must be in the request body (read whole, by its Content-Length).
    body_contains: tuple[bytes, ...] = ()
    hits: int = 0

    def matches(self, method: str, path: str, body: bytes | None = None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.body_contains and (body is None or not all(b in body for b in self.body_contains)):
            return False
        return method == self.method and re.search(self.path, path) is not None


@dataclass
class FaultProxy:
    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    @property
    def address(self) -> str:
        return self.url.split("://", 1)[1]

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _pick(self, method: str, path: str, body: bytes | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, body):
                    fault.hits += 1
                    return fault
        return None

    def _wants_body(self, method: str) -> bool:
        with self._lock:
            return any(f.body_contains and f.method == method for f in self.faults)

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(_IO_TIMEOUT_S)
        with client:
            head, rest = _read_head(client)
            if head is None:
                return
            request_line, *headers = head.split(b"\r\n")
            method, path, _ = request_line.decode("latin-1").split(" ", 2)
            body = None
            if self._wants_body(method):
                rest = body = _read_body(client, headers, rest)
            fault = self._pick(method, path, body)
            with self._lock:
                self.seen.append((method, path, fault.kind if fault else "pass"))
            if fault is not None and fault.kind == "status":
                body = b"injected fault\n"
                client.sendall(
                    f"HTTP/1.1 {fault.status} Injected\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n".encode()
                    + body
                )
                return
            kept = [h for h in headers if not h.lower().startswith(b"connection:")]
            head = b"\r\n".join([request_line, *kept, b"Connection: close"]) + b"\r\n\r\n"
            with socket.create_connection(self.upstream, timeout=_IO_TIMEOUT_S) as upstream:
                upstream.sendall(head)
                if fault is not None:
                    _forward_some(client, upstream, rest, fault.cut_after)
                    return
                pump = threading.Thread(target=_pump, args=(client, upstream, rest), daemon=True)
                pump.start()
                _pump(upstream, client, b"")
                pump.join(_IO_TIMEOUT_S)


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return None, b""
        if not chunk or len(data) > _HEAD_LIMIT:
            return None, b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def _read_body(sock: socket.socket, headers: list[bytes], first: bytes) -> bytes:
    length = 0
    for header in headers:
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    data = first
    while len(data) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _pump(src: socket.socket, dst: socket.socket, first: bytes) -> None:
    try:
        if first:
            dst.sendall(first)
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _forward_some(client: socket.socket, upstream: socket.socket, first: bytes, limit: int) -> None:
    """Forward ``limit`` bytes of the body, then drop both connections mid-request."""
    sent = 0
    data = first
    try:
        while sent < limit:
            if not data:
                data = client.recv(65536)
                if not data:
                    break
            piece = data[: limit - sent]
            upstream.sendall(piece)
            sent += len(piece)
            data = data[len(piece) :]
    except OSError:
        pass
    for sock in (upstream, client):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
