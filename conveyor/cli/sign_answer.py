"""Signing an answer on the approver's machine: the key never leaves it.

``conveyor approve --key PATH`` signs with that key (a private key file, or a ``.pub``
whose private half ssh-agent holds); without ``--key`` the one key in ssh-agent signs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from conveyor.approvals.starter import start_token
from conveyor.approvals.statement import Decision, sign_decision, stamp
from conveyor.errors import SigningFailed

AGENT_TIMEOUT_S = 10


def _agent_keys() -> list[str]:
    ssh_add = shutil.which("ssh-add")
    if ssh_add is None:
        raise SigningFailed("no --key given and ssh-add is not installed to ask ssh-agent")
    try:
        done = subprocess.run(
            [ssh_add, "-L"], capture_output=True, text=True, timeout=AGENT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise SigningFailed("ssh-agent did not answer; pass --key PATH") from None
    if done.returncode != 0:
        raise SigningFailed(
            "no --key given and no key in ssh-agent (is SSH_AUTH_SOCK set? `ssh-add` a key, "
            "or pass --key ~/.ssh/id_ed25519)"
        )
    return [line for line in done.stdout.splitlines() if line.strip()]


def _agent_key(approver: str) -> str:
    keys = _agent_keys()
    if len(keys) == 1:
        return keys[0]
    # Several keys: the one whose comment names the approver, as `ssh-keygen -C` sets it.
    named = [k for k in keys if len(k.split()) > 2 and approver in k.split()[2:]]
    if len(named) == 1:
        return named[0]
    raise SigningFailed(
        f"ssh-agent holds {len(keys)} keys and none is marked as {approver}'s: pass --key PATH"
    )


def signed_token(
    request: dict[str, Any],
    *,
    decision: Literal["approve", "reject"],
    approver: str,
    comment: str,
    key: Path | None,
    now: dt.datetime | None = None,
) -> str:
    """The one-line signed answer for the request a run waits on (see ``SignedAnswer``)."""
    statement = Decision(
        app=str(request["app"]),
        environment=str(request["environment"]),
        digest=str(request["digest"]),
        decision=decision,
        approver=approver,
        comment=comment,
        time=stamp(now or dt.datetime.now(dt.UTC)),
        run_id=str(request["run_id"]),
    )
    with _signing_key(approver, key) as path:
        return sign_decision(statement, path).token()


def signed_start(app: str, name: str, key: Path | None) -> str:
    """The signed start of ``conveyor ship --as NAME`` (see ``conveyor.approvals.starter``)."""
    with _signing_key(name, key) as path:
        return start_token(app, name, path)


@contextlib.contextmanager
def _signing_key(person: str, key: Path | None) -> Iterator[Path]:
    """``key``, or a .pub of the agent's key for ``person`` that ssh-keygen signs through."""
    if key is not None:
        yield key.expanduser()
        return
    with tempfile.TemporaryDirectory(prefix="conveyor-sign-") as tmp:
        public = Path(tmp) / "agent.pub"
        public.write_text(_agent_key(person) + "\n")
        yield public
