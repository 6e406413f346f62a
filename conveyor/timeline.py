"""Stage durations of one run, for the table a person reads after it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Timeline:
    rows: list[dict[str, str | float]] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        outcome = "failed"
        try:
            yield
            outcome = "ok"
        finally:
            self.rows.append(
                {"stage": name, "seconds": round(time.monotonic() - start, 2), "outcome": outcome}
            )
