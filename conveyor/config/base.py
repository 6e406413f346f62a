"""Shared building blocks of the pipeline file's models."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator, model_validator


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a pipeline file must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(StrictModel):
    """Where a credential comes from; the pipeline file never holds the secret itself.

    Exactly one of ``env`` (an environment variable), ``file`` (a file's content,
    stripped) or ``block`` (a Prefect ``Secret`` block's name) is set.
    """

    env: str | None = None
    file: Path | None = None
    block: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "block") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of 'env', 'file' or 'block'")
        return self

    def describe(self) -> str:
        if self.env is not None:
            return f"environment variable {self.env}"
        if self.file is not None:
            return f"file {self.file}"
        return f"Prefect Secret block {self.block!r}"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def _parse_duration(value: object) -> dt.timedelta:
    """ "90s", "15m", "24h", "2d": a bare number is refused, since nobody can tell whether
    ``timeout: 24`` meant hours or seconds."""
    if isinstance(value, dt.timedelta):
        return value
    m = _DURATION_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(
            f"a duration needs a unit, like '90s', '15m', '24h' or '2d' (got {value!r})"
        )
    return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


Duration = Annotated[dt.timedelta, PlainValidator(_parse_duration)]


def approver_problem(name: object) -> str | None:
    """Why ``name`` cannot be an approver's name, or None when it can.

    Approval compares names exactly, so a blank name, or one with spaces around it or
    characters that do not print, would be an identity nobody can tell apart from
    another. Used for the approvers list and for every approval answer.
    """
    if not isinstance(name, str):
        return "an approver's name must be a string"
    if not name.strip():
        return "an approver's name must not be blank"
    if name != name.strip():
        return f"an approver's name must not start or end with spaces (got {name!r})"
    if not name.isprintable():
        return f"an approver's name must be printable characters only (got {name!r})"
    return None


def _approver_name(name: str) -> str:
    problem = approver_problem(name)
    if problem:
        raise ValueError(problem)
    return name


ApproverName = Annotated[str, AfterValidator(_approver_name)]
