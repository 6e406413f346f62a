"""A request that waits with no process behind it, and what binds an answer to it.

The gate stores each ask with its run (when it was asked, its deadline), so every
execution of the run reads the same clock. Prefect hands a run the answer stored under
a pause key again whenever the run is executed again (a resume, a Retry), so an answer
is judged each time it is read: it must name this request's digest and environment,
be no older than the approval's validity, and keep its comment within bounds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

MAX_COMMENT = 2000
# Each ask is stored as a flow run input under this prefix and its pause key.
REQUEST_PREFIX = "conveyor-request-"
# The state message the deadline automation sets when it reschedules a run the server
# failed for an expired pause: that execution records the timeout, it is no new round.
EXPIRED_MESSAGE = "conveyor: approval deadline passed; recording the rejection"


@dataclass(frozen=True)
class WaitingRequest:
    run_id: str
    app: str
    version: str
    digest: str
    repository: str
    environment: str
    since: dt.datetime
    deadline: dt.datetime
    approvers: tuple[str, ...]
    valid_for_s: float
    pause_key: str
    # Where the count stood when this ask was made ("1 of 2: alice approved; ..."), and
    # the pause keys whose answers counted: the CLI tells a counted answer from a refused one.
    progress: str = ""
    counted: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "app": self.app,
            "version": self.version,
            "digest": self.digest,
            "repository": self.repository,
            "environment": self.environment,
            "since": self.since.isoformat(),
            "deadline": self.deadline.isoformat(),
            "approvers": list(self.approvers),
            "valid_for_s": self.valid_for_s,
            "pause_key": self.pause_key,
            "progress": self.progress,
            "counted": list(self.counted),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WaitingRequest:
        return cls(
            run_id=str(data["run_id"]),
            app=str(data["app"]),
            version=str(data["version"]),
            digest=str(data["digest"]),
            repository=str(data["repository"]),
            environment=str(data["environment"]),
            since=dt.datetime.fromisoformat(data["since"]),
            deadline=dt.datetime.fromisoformat(data["deadline"]),
            approvers=tuple(data["approvers"]),
            valid_for_s=float(data["valid_for_s"]),
            pause_key=str(data["pause_key"]),
            progress=str(data.get("progress") or ""),
            counted=tuple(str(k) for k in data.get("counted") or ()),
        )


def _ago(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds} s"


def binding_problem(
    answer: dict[str, Any],
    *,
    digest: str,
    environment: str,
    given_at: dt.datetime,
    valid_for: dt.timedelta,
    now: dt.datetime,
) -> str | None:
    """Why ``answer`` is not about this request or no longer valid; None when it is."""
    named = str(answer.get("digest") or "")
    if named != digest:
        return f"the answer names {named or 'no digest'}, this run promotes {digest}"
    where = str(answer.get("environment") or "")
    if where != environment:
        return f"the answer is for {where or 'no environment'}, this run enters {environment}"
    comment = str(answer.get("comment") or "")
    if len(comment) > MAX_COMMENT:
        return f"the comment has {len(comment)} characters (at most {MAX_COMMENT})"
    age = now - given_at
    if age > valid_for:
        return (
            f"the answer was given {_ago(age)} ago, longer than the {_ago(valid_for)} "
            "an answer stays valid"
        )
    return None
