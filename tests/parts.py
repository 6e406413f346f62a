"""Finding the real parts the tests run against.

A missing part fails the test under CI (CI=true) and skips it, with the reason,
on a developer's machine: CI must never pass by skipping silently.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str, how: str) -> NoReturn:
    message = f"{what} is missing: {how}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_binary(name: str, how: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"the {name} binary", how)
    return path


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
