"""The promotion model: a release is an immutable (repository, digest) pair.

Tags are labels that follow releases through stages; nothing downstream of the push
ever resolves a tag to decide what to deploy. The record keeps where a release was
verified and who approved it, as Kargo's freight does.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Release(BaseModel):
    model_config = ConfigDict(frozen=True)

    app: str
    registry: str  # host[:port], as image references name it
    repository: str
    digest: str
    version: str
    revision: str | None = None
    # A release of several services: ``digest`` is then its release artifact (an OCI
    # index) and these are the services' images, dependencies first. Empty for one app.
    members: tuple[Release, ...] = ()

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not DIGEST_RE.match(v):
            raise ValueError(f"not a sha256 digest: {v!r}")
        return v

    @property
    def image(self) -> str:
        """The only reference deploys use: ``registry/repository@sha256:...``."""
        return f"{self.registry}/{self.repository}@{self.digest}"

    @property
    def short(self) -> str:
        return self.digest[7:19]

    @property
    def services(self) -> tuple[Release, ...]:
        """The images this release deploys: its members, or itself for a release of one."""
        return self.members or (self,)

    def member(self, service: str) -> Release:
        for m in self.members:
            if m.app == service:
                return m
        raise KeyError(service)


class Verification(BaseModel):
    environment: str
    at: dt.datetime = Field(default_factory=utcnow)
    passed: int
    failed: int
    summary: str = ""


class ApprovalRecord(BaseModel):
    environment: str
    decision: Literal["approve", "reject", "timeout", "superseded"]
    approver: str | None
    comment: str = ""
    at: dt.datetime = Field(default_factory=utcnow)
    flow_run_id: str | None = None
    # The digest the answer named: an approval is bound to one release.
    digest: str | None = None
    # The in-toto Statement kept as evidence (every counted answer and its signature).
    statement: dict[str, Any] | None = None


class Handover(BaseModel):
    """Where the release went on without this run: the promote run that waits at a gate."""

    environment: str
    flow_run_id: str
    flow_run_name: str
    deployment: str
    work_pool: str
    at: dt.datetime = Field(default_factory=utcnow)


class Deployment(BaseModel):
    environment: str
    at: dt.datetime = Field(default_factory=utcnow)
    changed: bool


class ReleaseRecord(BaseModel):
    release: Release
    scan_summary: str = ""
    verifications: list[Verification] = Field(default_factory=list)
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    deployments: list[Deployment] = Field(default_factory=list)
    handovers: list[Handover] = Field(default_factory=list)
    # What a person must read about where this run left the release (waiting, superseded).
    notes: list[str] = Field(default_factory=list)
