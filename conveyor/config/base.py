"""Shared building blocks of the pipeline file's models."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator


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


def _parse_duration(value: object) -> object:
    """Accept "90s", "15m", "24h", "2d" besides pydantic's own forms."""
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    return value


Duration = Annotated[dt.timedelta, BeforeValidator(_parse_duration)]
