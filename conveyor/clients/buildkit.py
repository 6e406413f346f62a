"""BuildKit's progress, as the engine's ``/build?version=2`` stream carries it.

Each ``moby.buildkit.trace`` message's ``aux`` is a base64 ``StatusResponse`` of
BuildKit's control API (``api/services/control/control.proto``): the build's vertices
(steps), their state and their output. ``Progress`` turns them into the lines
``docker build --progress=plain`` prints (``#3 [2/4] COPY www /www``, ``#3 DONE 0.1s``),
so a build log reads as the docker CLI's does. Only the fields used are decoded, by the
protobuf wire format's rules; unknown fields are skipped, as protobuf requires.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field

Fields = dict[int, list[int | bytes]]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# StatusResponse, Vertex, VertexLog and google.protobuf.Timestamp field numbers.
_VERTEXES, _LOGS = 1, 3
_V_DIGEST, _V_NAME, _V_CACHED, _V_STARTED, _V_COMPLETED, _V_ERROR = 1, 3, 4, 5, 6, 7
_L_VERTEX, _L_MSG = 1, 4
_T_SECONDS, _T_NANOS = 1, 2


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def fields(data: bytes) -> Fields:
    """One message's fields by number, each a list of its values in order."""
    out: Fields = {}
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == _VARINT:
            value, at = _varint(data, at)
        elif wire == _LEN:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            value, at = int.from_bytes(data[at : at + width], "little"), at + width
        else:
            raise ValueError(f"unknown wire type {wire}")
        if at > len(data):
            raise ValueError("truncated field")
        out.setdefault(number, []).append(value)
    return out


def _text(f: Fields, number: int) -> str:
    values = f.get(number) or [b""]
    last = values[-1]
    return last.decode("utf-8", "replace") if isinstance(last, bytes) else str(last)


def _seconds(f: Fields, number: int) -> float | None:
    values = f.get(number)
    if not values or not isinstance(values[-1], bytes):
        return None
    t = fields(values[-1])
    seconds, nanos = (t.get(_T_SECONDS) or [0])[-1], (t.get(_T_NANOS) or [0])[-1]
    return float(seconds if isinstance(seconds, int) else 0) + (
        nanos / 1e9 if isinstance(nanos, int) else 0.0
    )


@dataclass
class _Step:
    number: int
    announced: bool = False
    cached: bool = False
    ended: bool = False
    partial: str = ""  # output after its last newline: a log message is a chunk


@dataclass
class Progress:
    """Plain progress lines of one build, each handed to ``emit`` once, in order."""

    emit: Callable[[str], None]
    _steps: dict[str, _Step] = field(default_factory=dict)

    def feed(self, aux: str) -> None:
        """One trace message; one that does not decode is skipped, not fatal: it is
        progress only, and the build's outcome comes in the stream's own messages."""
        try:
            status = fields(base64.b64decode(aux, validate=True))
            for raw in status.get(_VERTEXES, []):
                if isinstance(raw, bytes):
                    self._vertex(fields(raw))
            for raw in status.get(_LOGS, []):
                if isinstance(raw, bytes):
                    self._log(fields(raw))
        except (ValueError, binascii.Error):
            return

    def _step(self, digest: str) -> _Step:
        if digest not in self._steps:
            self._steps[digest] = _Step(len(self._steps) + 1)
        return self._steps[digest]

    def _vertex(self, v: Fields) -> None:
        step = self._step(_text(v, _V_DIGEST))
        if not step.announced:
            step.announced = True
            self.emit(f"#{step.number} {_text(v, _V_NAME)}")
        cached = bool((v.get(_V_CACHED) or [0])[-1])
        if cached and not step.cached:
            step.cached = True
            self.emit(f"#{step.number} CACHED")
        error = _text(v, _V_ERROR)
        completed, started = _seconds(v, _V_COMPLETED), _seconds(v, _V_STARTED)
        if step.ended or (completed is None and not error):
            return
        step.ended = True
        if error:
            self.emit(f"#{step.number} ERROR: {error}")
        elif not step.cached:
            took = completed - started if completed is not None and started is not None else 0
            self.emit(f"#{step.number} DONE {took:.1f}s")

    def _log(self, entry: Fields) -> None:
        step = self._step(_text(entry, _L_VERTEX))
        *lines, step.partial = (step.partial + _text(entry, _L_MSG)).split("\n")
        for line in lines:
            self._output(step, line)

    def close(self) -> None:
        """Emit every step's output that no newline ended."""
        for step in self._steps.values():
            self._output(step, step.partial)
            step.partial = ""

    def _output(self, step: _Step, line: str) -> None:
        if line.strip():
            self.emit(f"#{step.number} {line.rstrip()}")
