"""The changes a release brings into an environment, and who may therefore not approve it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from conveyor.approvals.policy import Identity
from conveyor.clients.git_history import Commit


@dataclass(frozen=True)
class Changes:
    commits: list[Commit]
    # False when the running release's commit is not in the recorded history (unknown,
    # or older than it reaches): then every recorded commit counts as new, to be safe.
    since_known: bool


def changes_since(history: list[Commit], running_revision: str | None) -> Changes:
    """The commits of ``history`` (newest first) after ``running_revision``."""
    if running_revision:
        for i, commit in enumerate(history):
            if commit.sha == running_revision:
                return Changes(history[:i], since_known=True)
    return Changes(list(history), since_known=False)


def _matches(person: Identity, email: str, key: str) -> bool:
    return email.lower() in person.emails or (bool(key) and key in person.fingerprints)


def self_approvers(
    people: Iterable[Identity], commits: Iterable[Commit], started_by: str | None = None
) -> dict[str, str]:
    """Approvers who authored, committed or started this release, with the first reason found."""
    commits = list(commits)
    found: dict[str, str] = {}
    for person in people:
        if started_by and (started_by == person.name or started_by in person.aliases):
            found[person.name] = "started this run"
            continue
        for c in commits:
            role = (
                "authored"
                if _matches(person, c.author_email, c.signing_key)
                else "committed"
                if _matches(person, c.committer_email, "")
                else None
            )
            if role:
                found[person.name] = f"{role} {c.sha[:10]} ({c.subject!r}) in this release"
                break
    return found


def summary(changes: Changes, limit: int = 20) -> list[str]:
    """One line per commit for the approval request, newest first."""
    lines = [
        f"{c.sha[:10]} {c.subject} ({c.author_name} <{c.author_email}>)"
        for c in changes.commits[:limit]
    ]
    if len(changes.commits) > limit:
        lines.append(f"… and {len(changes.commits) - limit} more")
    if not changes.since_known:
        lines.append(
            "(the running release's commit is not in this history: all recorded commits shown)"
        )
    return lines


def source_payload(history: list[Commit], revision: str | None) -> dict[str, Any]:
    """The ``source`` evidence of a build: its commit and the history before it."""
    return {"revision": revision, "commits": [c.model_dump() for c in history]}


def recorded_history(payload: dict[str, Any]) -> tuple[str | None, list[Commit]]:
    """What ``source_payload`` recorded; commits that no longer parse are left out."""
    commits = []
    for raw in payload.get("commits") or []:
        try:
            commits.append(Commit.model_validate(raw))
        except ValidationError:
            continue
    revision = payload.get("revision")
    return (str(revision) if revision else None), commits


def release_changes(this: dict[str, Any] | None, running: dict[str, Any] | None) -> Changes:
    """The commits of a release since the one the environment runs, from their ``source`` evidence."""
    if this is None:
        return Changes([], since_known=False)
    _, commits = recorded_history(this)
    running_revision = recorded_history(running)[0] if running is not None else None
    return changes_since(commits, running_revision)


def request_lines(changes: Changes, excluded: dict[str, str], allowed: bool) -> list[str]:
    """What the request shows about the changes and who may not approve them."""
    lines = [f"changes since the running release ({len(changes.commits)} commits):"]
    lines += [f"  {line}" for line in summary(changes)] or ["  (none recorded)"]
    for name, why in sorted(excluded.items()):
        state = "may approve (allow_self_approval)" if allowed else "may not approve"
        lines.append(f"{name} {state}: {why}")
    return lines
