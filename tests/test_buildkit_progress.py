"""BuildKit's trace messages as the engine streams them, encoded here by protobuf's wire
rules (the messages of BuildKit's control API), rendered as ``--progress=plain`` does."""

from __future__ import annotations

import base64

from conveyor.clients.buildkit import Progress


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _time(seconds: int, nanos: int = 0) -> bytes:
    return _field(1, seconds) + _field(2, nanos)


def _trace(vertexes: tuple[bytes, ...] = (), logs: tuple[bytes, ...] = ()) -> str:
    body = b"".join(_field(1, v) for v in vertexes) + b"".join(_field(3, x) for x in logs)
    return base64.b64encode(body).decode()


def _vertex(digest: str, name: str, **extra: bytes | int) -> bytes:
    numbers = {"cached": 4, "started": 5, "completed": 6, "error": 7}
    body = _field(1, digest.encode()) + _field(3, name.encode())
    return body + b"".join(_field(numbers[k], v) for k, v in extra.items())


def _log(digest: str, text: str) -> bytes:
    return _field(1, digest.encode()) + _field(4, text.encode())


def test_steps_their_output_and_their_end_each_once_in_order() -> None:
    lines: list[str] = []
    progress = Progress(lines.append)
    run, copy = "sha256:run", "sha256:copy"
    progress.feed(_trace((_vertex(copy, "[1/2] COPY a /a", cached=1),)))
    progress.feed(_trace((_vertex(run, "[2/2] RUN make", started=_time(10)),)))
    # Output comes in chunks that need not end a line; a repeated update adds nothing.
    progress.feed(_trace(logs=(_log(run, "compiling\nlinking pa"),)))
    progress.feed(_trace((_vertex(run, "[2/2] RUN make", started=_time(10)),)))
    progress.feed(_trace(logs=(_log(run, "rt two\n"),)))
    failed = _vertex(run, "[2/2] RUN make", started=_time(10), error=b"exit code: 2")
    progress.feed(_trace((failed,)))
    progress.feed(_trace(logs=(_log(run, "no newline at the end"),)))
    progress.close()
    assert lines == [
        "#1 [1/2] COPY a /a",
        "#1 CACHED",
        "#2 [2/2] RUN make",
        "#2 compiling",
        "#2 linking part two",
        "#2 ERROR: exit code: 2",
        "#2 no newline at the end",
    ]


def test_a_step_that_ends_says_how_long_it_took() -> None:
    lines: list[str] = []
    done = _vertex(
        "sha256:x", "exporting to image", started=_time(5), completed=_time(6, 250_000_000)
    )
    Progress(lines.append).feed(_trace((done,)))
    assert lines == ["#1 exporting to image", "#1 DONE 1.2s"]


def test_a_trace_that_does_not_decode_is_skipped() -> None:
    lines: list[str] = []
    progress = Progress(lines.append)
    for junk in ("not base64 at all!", base64.b64encode(b"\x0a\xff").decode()):
        progress.feed(junk)
    assert lines == []
