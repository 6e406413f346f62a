"""The Trivy gate's policy."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field

from conveyor.config.base import StrictModel

Severity = Literal["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
Scanner = Literal["secret", "misconfig", "vuln"]


class IgnoreEntry(StrictModel):
    id: str
    reason: str = Field(min_length=1)
    expires: dt.date


class TrivyDbConfig(StrictModel):
    cache_dir: Path | None = None
    repository: str | None = None
    # With no vulnerability DB the gate fails closed unless this says "warn".
    on_missing: Literal["fail", "warn"] = "fail"


class ScanPolicy(StrictModel):
    scanners: list[Scanner] = Field(default_factory=lambda: ["secret", "misconfig", "vuln"])
    blocking: list[Severity] = Field(default_factory=lambda: ["CRITICAL", "HIGH"])
    ignore: list[IgnoreEntry] = Field(default_factory=list)
    fixed_only: bool = False
    db: TrivyDbConfig = Field(default_factory=TrivyDbConfig)
    timeout_s: float = Field(default=600, gt=0)
