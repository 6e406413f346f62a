"""A loop on a thread of its own for as long as a ``with`` block runs: the samplers that
watch a system (a URL's gaps, an API's latency, the healthy tasks) while a test or a
benchmark changes it.
"""

from __future__ import annotations

import threading
from typing import Self


class Background:
    """Runs ``_run`` on a daemon thread from the ``with`` until the block ends; ``_run``
    loops until ``_stop`` is set."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
