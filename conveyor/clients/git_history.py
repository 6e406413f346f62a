"""The commits a build contains, read from the source's git history."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pydantic import BaseModel

_GIT_TIMEOUT_S = 15.0
# Unit and record separators: commit subjects may hold any printable character.
_FIELDS = ("%H", "%s", "%an", "%ae", "%cn", "%ce", "%GF")
_FORMAT = "%x1f".join(_FIELDS) + "%x1e"


class Commit(BaseModel):
    sha: str
    subject: str
    author_name: str
    author_email: str
    committer_name: str
    committer_email: str
    # The fingerprint of the key that signed the commit, when git could check it.
    signing_key: str = ""


def history(context: Path, revision: str, limit: int = 200) -> list[Commit]:
    """The newest ``limit`` commits reachable from ``revision``, newest first; [] outside git."""
    try:
        done = subprocess.run(
            ["git", "-C", str(context), "log", f"-n{limit}", f"--format={_FORMAT}", revision, "--"],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    commits = []
    for record in done.stdout.split("\x1e"):
        fields = record.strip("\n").split("\x1f")
        if len(fields) == len(_FIELDS):
            commits.append(Commit(**dict(zip(Commit.model_fields, fields, strict=True))))
    return commits
