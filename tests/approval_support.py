"""Helpers of the approval tests: real OpenSSH keys, signed decisions, git history."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.approvals.policy import Identity, Request
from conveyor.approvals.statement import Decision, SignedAnswer, sign_decision, stamp
from conveyor.approvals.waiting import WaitingRequest
from tests.parts import require_binary

DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
RUN = "11111111-2222-3333-4444-555555555555"


def waiting_request(run_id: str = RUN, **changes: Any) -> WaitingRequest:
    """An ask of shop 1.2.0 into production made now, for an hour, of alice under key -1;
    ``changes`` give the fields a test is about."""
    now = dt.datetime.now(dt.UTC)
    fields: dict[str, Any] = {
        "run_id": run_id,
        "app": "shop",
        "version": "1.2.0",
        "digest": DIGEST,
        "repository": "conveyor/shop",
        "environment": "production",
        "since": now,
        "deadline": now + dt.timedelta(hours=1),
        "approvers": ("alice",),
        "valid_for_s": 3600,
        "pause_key": "approval-production-aaaaaaaaaaaa-1",
    }
    return WaitingRequest(**(fields | changes))


def signed_request(people: list[Identity], digest: str = DIGEST, **changes: Any) -> Request:
    """The signed approval of shop ``digest`` into production that run RUN asks of ``people``."""
    return Request(
        app="shop",
        environment="production",
        digest=digest,
        run_id=RUN,
        identity="signed",
        people=people,
        **changes,
    )


@dataclass(frozen=True)
class Key:
    name: str
    private: Path

    @property
    def public(self) -> str:
        return Path(f"{self.private}.pub").read_text().strip()


def make_key(folder: Path, name: str) -> Key:
    require_binary("ssh-keygen", "apt-get install openssh-client")
    path = folder / f"id_{name}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return Key(name, path)


def decision(
    approver: str,
    *,
    verdict: str = "approve",
    digest: str = DIGEST,
    environment: str = "production",
    run_id: str = RUN,
    when: dt.datetime | None = None,
    comment: str = "looks good",
) -> Decision:
    return Decision(
        app="shop",
        environment=environment,
        digest=digest,
        decision=verdict,  # type: ignore[arg-type]
        approver=approver,
        comment=comment,
        time=stamp(when or dt.datetime.now(dt.UTC)),
        run_id=run_id,
    )


def signed(key: Key, approver: str | None = None, **kw: object) -> SignedAnswer:
    return sign_decision(decision(approver or key.name, **kw), key.private)  # type: ignore[arg-type]


def git_repo(folder: Path, commits: list[tuple[str, str, str]]) -> list[str]:
    """A repository with one commit per (subject, author name, author email); shas oldest first."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    shas = []
    for i, (subject, name, email) in enumerate(commits):
        (folder / f"f{i}").write_text(subject)
        env = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": "ci",
            "GIT_COMMITTER_EMAIL": "ci@corp.example",
            "PATH": "/usr/bin:/bin",
            "HOME": str(folder),
        }
        subprocess.run(["git", "-C", str(folder), "add", "."], check=True, env=env)
        subprocess.run(["git", "-C", str(folder), "commit", "-qm", subject], check=True, env=env)
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        shas.append(out.stdout.strip())
    return shas
