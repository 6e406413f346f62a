"""The Trivy gate's policy."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from conveyor.config.base import StrictModel

Severity = Literal["UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
Scanner = Literal["secret", "misconfig", "vuln"]


class IgnoreEntry(StrictModel):
    """Accept one finding id (CVE, misconfig check like DS-0002, or secret rule) for a while.

    The entry applies up to and including ``expires``; from the next day on it no
    longer ignores, and the scan summary says that it expired.
    """

    id: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    expires: dt.date


class TrivyDbConfig(StrictModel):
    # Where the vulnerability DB lives (db/trivy.db); trivy's default cache when unset.
    cache_dir: Path | None = None
    # An OCI mirror of trivy-db (e.g. "registry.internal:5000/aquasec/trivy-db:2").
    repository: str | None = None
    # With no vulnerability DB the gate fails closed unless this says "warn".
    on_missing: Literal["fail", "warn"] = "fail"


def _all_scanners() -> list[Scanner]:
    return ["secret", "misconfig", "vuln"]


def _high_and_critical() -> list[Severity]:
    return ["CRITICAL", "HIGH"]


class ScanPolicy(StrictModel):
    scanners: list[Scanner] = Field(default_factory=_all_scanners, min_length=1)
    blocking: list[Severity] = Field(default_factory=_high_and_critical)
    ignore: list[IgnoreEntry] = Field(default_factory=list)
    # Vulnerabilities without a fixed version do not block (they stay in the report).
    fixed_only: bool = False
    db: TrivyDbConfig = Field(default_factory=TrivyDbConfig)
    timeout_s: float = Field(default=600, gt=0)
    # Also check the build context's Dockerfile with `trivy config` (misconfig scanner).
    dockerfile: bool = True

    @field_validator("scanners", "blocking")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {', '.join(repeated)}")
        return value
