"""A small router on the stdlib's ThreadingHTTPServer (one thread per connection, so SSE
streams and long requests never block the API)."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    remote: str
    params: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[-1].lower() in ("true", "1", "")

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None
    content_type: str = "application/json"

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


def message(status: int, text: str, **extra: Any) -> Response:
    return Response(status, {"message": text, **extra})


Handler = Callable[[Request], Response]
Middleware = Callable[[Request, Handler], Response]


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def find(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        """(handler, params, path_known); path_known without handler means 405."""
        known = False
        for route_method, pattern, handler in self._routes:
            found = pattern.match(path)
            if found:
                known = True
                if route_method == method:
                    params = {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
                    return handler, params, True
        return None, {}, known


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        dispatch: Handler,
        family: socket.AddressFamily = socket.AF_INET,
    ) -> None:
        self.address_family = family
        self.dispatch = dispatch
        self.stopping = False
        super().__init__(address, _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    server: SimServer
    protocol_version = "HTTP/1.1"
    server_version = "marathon-sim"
    # Headers and body (and back-to-back SSE frames) go out as separate writes: with Nagle
    # on, the second waits for the client's delayed ACK, 40 ms on Linux, on kept-alive calls.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(message(413, "Request entity too large"))
            return
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
            remote=self.client_address[0],
        )
        try:
            response = self.server.dispatch(request)
        except Exception:
            log.exception("handler failed for %s %s", self.command, parts.path)
            response = message(500, "internal simulator error (see its log)")
        self._send(response)

    def _send(self, response: Response) -> None:
        if response.stream is not None:
            self._send_stream(response)
            return
        payload = response.payload()
        self.send_response(response.status)
        if payload or response.status not in (202, 204):
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _send_stream(self, response: Response) -> None:
        assert response.stream is not None
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        try:
            for chunk in response.stream:
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            pass
        finally:
            close = getattr(response.stream, "close", None)
            if close is not None:
                close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle
