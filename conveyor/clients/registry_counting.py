"""Byte counting under the registry client: what crossed the transport, blobs apart.

Counting at the transport sees every byte as it streams, token requests and retries
included, which is what proves a promotion moved no layer bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Counters:
    """Bytes and requests that crossed the transport, blobs counted apart."""

    bytes_sent: int = 0
    bytes_received: int = 0
    blob_bytes_sent: int = 0
    blob_bytes_received: int = 0
    requests: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.bytes_sent = self.bytes_received = 0
        self.blob_bytes_sent = self.blob_bytes_received = 0
        self.requests = {}


class _CountingStream(httpx.SyncByteStream):
    def __init__(self, inner: Iterable[bytes], add: Any) -> None:
        self.inner = inner
        self._add = add

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self._add(len(chunk))
            yield chunk

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class CountingTransport(httpx.BaseTransport):
    """Wraps a transport and counts body bytes in both directions as they stream."""

    def __init__(self, inner: httpx.BaseTransport, counters: Counters) -> None:
        self.inner = inner
        self.counters = counters

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        c = self.counters
        blob = "/blobs/" in request.url.path
        kind = "blob" if blob else request.url.path.rsplit("/", 2)[-2]
        label = f"{request.method} {kind}"
        c.requests[label] = c.requests.get(label, 0) + 1

        def sent(n: int) -> None:
            c.bytes_sent += n
            if blob:
                c.blob_bytes_sent += n

        def received(n: int) -> None:
            c.bytes_received += n
            if blob:
                c.blob_bytes_received += n

        body: Iterable[bytes] = request.stream  # type: ignore[assignment]
        # An auth retry sends the same request again: count it again, but wrap it once.
        if isinstance(body, _CountingStream):
            body = body.inner
        request.stream = _CountingStream(body, sent)
        response = self.inner.handle_request(request)
        response.stream = _CountingStream(response.stream, received)  # type: ignore[arg-type]
        return response

    def close(self) -> None:
        self.inner.close()
