"""Pre-flight results shared by every cluster check (DC/OS, vSphere)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from conveyor.errors import PreflightFailed

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    subject: str  # the object checked, named so a person can find it: "host esx-01"
    name: str  # what was checked: "connection state"
    status: Status
    detail: str = ""

    def line(self) -> str:
        return (
            f"{self.subject}: {self.name}: {self.detail}"
            if self.detail
            else f"{self.subject}: {self.name}"
        )


@dataclass(frozen=True)
class Demand:
    """What the release needs: ``instances`` each taking ``cpus`` cores and ``mem_mb`` MiB."""

    instances: int
    cpus: float
    mem_mb: float


@dataclass(frozen=True)
class PreflightReport:
    environment: str
    source: str  # "dcos", "vsphere", ...
    checks: tuple[Check, ...]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    def raise_for_failures(self, warnings_block: bool = False) -> None:
        blocking = self.failures + (self.warnings if warnings_block else [])
        if blocking:
            raise PreflightFailed(
                f"{self.source} pre-flight of {self.environment} failed",
                [c.line() for c in blocking],
            )
