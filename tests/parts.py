"""Finding the real parts the tests run against.

A missing part fails the test under CI (CI=true) and skips it, with the reason,
on a developer's machine: CI must never pass by skipping silently.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any, NoReturn

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


def require_postgres() -> None:
    """PostgreSQL's programs, where the local stack looks for them."""
    from conveyor.errors import LocalStackFailed
    from conveyor.localstack.postgres import bindir

    try:
        bindir()
    except LocalStackFailed:
        missing("PostgreSQL", "apt-get install postgresql (scripts/setup.sh does)")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def two_environments(
    context: Path | str, production: dict[str, Any], app: str = "hello", integration_port: int = 1
) -> dict[str, Any]:
    """A pipeline document with no outside system in it: integration on the docker
    driver, then ``production`` (its name and tag filled in); for tests of the config
    and of the stages that never deploy."""
    return {
        "app": {"name": app, "context": str(context)},
        "registry": {"url": "http://127.0.0.1:5000", "repository": f"conveyor/{app}"},
        "environments": [
            {
                "name": "integration",
                "tag": "integration-ready",
                "driver": {"kind": "docker", "port": integration_port},
            },
            {"name": "production", "tag": "production-ready", **production},
        ],
    }
