"""The stack and the sample app a benchmark runs against, started for one run and gone
after it: the same real parts the end-to-end tests start (tests/pipeline_support.py).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker

from tests.pipeline_support import App, Stack, kept_app, start_stack


@contextlib.contextmanager
def running_stack(root: Path) -> Iterator[Stack]:
    """``start_stack`` under ``root``, stopped at the end (its worker too, where one runs)."""
    stack = start_stack(root)
    try:
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def scratch_app(prefix: str) -> Iterator[tuple[Stack, App]]:
    """A stack and the sample app in a new temporary folder (the stack's root)."""
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
        running_stack(Path(tmp)) as stack,
        contextlib.closing(docker.from_env(timeout=120)) as client,
        kept_app(stack, client, stack.root) as app,
    ):
        yield stack, app
