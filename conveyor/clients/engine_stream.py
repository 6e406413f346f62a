"""The engine's build and push streams: Docker's ``JSONMessage`` as pydantic models,
and their text re-split into whole lines."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field

_TAIL_LINES = 20


class _Progress(BaseModel):
    total: int | None = None


class _ErrorDetail(BaseModel):
    message: str | None = None


class StreamChunk(BaseModel):
    """One JSON message of the engine's build or push stream (Docker's ``JSONMessage``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    stream: str | None = None
    status: str | None = None
    id: str | None = None
    error: str | None = None
    error_detail: _ErrorDetail | None = Field(None, alias="errorDetail")
    progress_detail: _Progress | None = Field(None, alias="progressDetail")
    # Build answers {"ID": ...}, push {"Tag", "Digest", "Size"}: kept as JSON; a
    # BuildKit trace's is a base64 protobuf message (``buildkit.Progress``).
    aux: dict[str, object] | str | None = None

    @property
    def failure(self) -> str | None:
        """The error the engine reports in this message, if it reports one."""
        if self.error is None and self.error_detail is None:
            return None
        return (self.error_detail.message if self.error_detail else None) or self.error or ""

    def aux_field(self, name: str) -> str | None:
        value = self.aux.get(name) if isinstance(self.aux, dict) else None
        return str(value) if value else None


def chunks(stream: Iterable[object]) -> Iterator[StreamChunk]:
    return (StreamChunk.model_validate(c) for c in stream if isinstance(c, dict))


class Lines:
    """Re-splits the engine's stream chunks into whole lines, keeping the last few."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._partial = ""
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)

    def feed(self, text: str) -> None:
        *complete, self._partial = (self._partial + text).split("\n")
        for line in complete:
            self._emit(line)

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = ""

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        if line.strip():
            self.tail.append(line)
            self._log(line)
