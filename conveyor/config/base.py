"""Shared building blocks of the pipeline file's models."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator


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
