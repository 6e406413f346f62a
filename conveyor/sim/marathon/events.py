"""Marathon's event bus and its Server-Sent Events stream (``GET /v2/events``)."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from conveyor.sim.marathon.model import now_iso

# A slow or dead subscriber must not grow memory without bound: it loses its oldest events.
QUEUE_LIMIT = 10_000
KEEPALIVE_S = 15.0


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[queue.Queue[dict[str, Any]]] = []

    def publish(self, event_type: str, **payload: Any) -> None:
        event = {**payload, "eventType": event_type, "timestamp": now_iso()}
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            if q.qsize() >= QUEUE_LIMIT:
                with contextlib.suppress(queue.Empty):
                    q.get_nowait()
            q.put(event)

    def subscribe(self) -> queue.Queue[dict[str, Any]]:
        q: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[dict[str, Any]]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)


def sse_frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['eventType']}\ndata: {json.dumps(event)}\n\n".encode()


def stream(
    bus: EventBus,
    remote: str,
    wanted: set[str],
    stopping: Callable[[], bool],
    poll_s: float = 0.5,
) -> Iterator[bytes]:
    """Frames for one subscriber until ``stopping()``; empty frames are keep-alive comments."""
    q = bus.subscribe()
    try:
        attached = {
            "remoteAddress": remote,
            "eventType": "event_stream_attached",
            "timestamp": now_iso(),
        }
        if not wanted or "event_stream_attached" in wanted:
            yield sse_frame(attached)
        idle = 0.0
        while not stopping():
            try:
                event = q.get(timeout=poll_s)
            except queue.Empty:
                idle += poll_s
                if idle >= KEEPALIVE_S:
                    idle = 0.0
                    yield b":\n\n"
                continue
            idle = 0.0
            if not wanted or event["eventType"] in wanted:
                yield sse_frame(event)
    finally:
        bus.unsubscribe(q)
