"""Trivy as a subprocess: run it with JSON output and parse its report into typed findings.

Every run is offline by construction: no update checks, no telemetry, no check-bundle
download, and the vulnerability DB comes only from the local cache or from a configured
mirror. Without a DB the vulnerability scan raises ``VulnDbMissing`` instead of
scanning nothing. Secret values never leave this module: trivy's ``Match`` and
``Code`` fields are dropped while parsing, a finding keeps only rule, file and line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conveyor.errors import RequestTimeout, ScanBlocked, VulnDbMissing

Kind = Literal["secret", "misconfig", "vuln"]

_OFFLINE = [
    "--format", "json", "--quiet", "--disable-telemetry", "--skip-version-check",
    "--skip-check-update",
]  # fmt: skip
# `trivy image` also knows of DBs and VEX repositories it would otherwise fetch.
_OFFLINE_IMAGE = ["--skip-java-db-update", "--skip-vex-repo-update", "--offline-scan"]
_DB_ERROR = re.compile(r"DB error|skip-db-update cannot be specified|vulnerability DB", re.I)
_STDERR_TAIL = 2000


@dataclass(frozen=True)
class Finding:
    kind: Kind
    id: str
    severity: str
    title: str
    target: str
    location: str = ""
    package: str = ""
    installed_version: str = ""
    fixed_version: str = ""


@dataclass(frozen=True)
class DbStatus:
    """What the cache folder holds: a usable DB needs ``db/trivy.db`` and ``db/metadata.json``."""

    cache_dir: Path
    present: bool
    updated_at: str | None = None

    def describe(self) -> str:
        if self.present:
            return (
                f"trivy DB in {self.cache_dir} (updated {self.updated_at or 'at an unknown time'})"
            )
        return f"no trivy vulnerability DB in {self.cache_dir} (db/trivy.db + db/metadata.json)"


def default_cache_dir() -> Path:
    """Trivy's own default: a DB fetched with ``trivy image --download-db-only`` counts."""
    env = os.environ.get("TRIVY_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trivy"


def _secrets(target: str, items: list[dict[str, Any]]) -> list[Finding]:
    return [
        Finding(
            kind="secret",
            id=str(s.get("RuleID", "")),
            severity=str(s.get("Severity", "UNKNOWN")),
            title=str(s.get("Title", "")),
            target=target,
            location=f"{target}:{s['StartLine']}" if s.get("StartLine") else target,
        )
        for s in items
    ]


def _misconfigs(target: str, items: list[dict[str, Any]]) -> list[Finding]:
    out = []
    for m in items:
        if m.get("Status", "FAIL") != "FAIL":
            continue
        line = (m.get("CauseMetadata") or {}).get("StartLine")
        out.append(
            Finding(
                kind="misconfig",
                id=str(m.get("ID", "")),
                severity=str(m.get("Severity", "UNKNOWN")),
                title=str(m.get("Title", "")),
                target=target,
                location=f"{target}:{line}" if line else target,
            )
        )
    return out


def _vulns(target: str, items: list[dict[str, Any]]) -> list[Finding]:
    return [
        Finding(
            kind="vuln",
            id=str(v.get("VulnerabilityID", "")),
            severity=str(v.get("Severity", "UNKNOWN")),
            title=str(v.get("Title") or v.get("VulnerabilityID", "")),
            target=target,
            location=str(v.get("PkgPath") or target),
            package=str(v.get("PkgName", "")),
            installed_version=str(v.get("InstalledVersion", "")),
            fixed_version=str(v.get("FixedVersion", "")),
        )
        for v in items
    ]


def parse_report(report: dict[str, Any]) -> list[Finding]:
    """Typed findings of one trivy JSON report (schema 2); secret values are not kept."""
    findings: list[Finding] = []
    for result in report.get("Results") or []:
        target = str(result.get("Target", ""))
        findings += _secrets(target, result.get("Secrets") or [])
        findings += _misconfigs(target, result.get("Misconfigurations") or [])
        findings += _vulns(target, result.get("Vulnerabilities") or [])
    return findings


class Trivy:
    """One trivy binary with one cache folder; each call is one bounded subprocess."""

    def __init__(
        self,
        binary: str = "trivy",
        cache_dir: Path | None = None,
        db_repository: str | None = None,
        timeout_s: float = 600.0,
        docker_host: str | None = None,
    ) -> None:
        self.binary = binary
        self.cache_dir = cache_dir or default_cache_dir()
        self.db_repository = db_repository
        self.timeout_s = timeout_s
        self.docker_host = docker_host

    def __repr__(self) -> str:
        return f"Trivy(binary={self.binary!r}, cache_dir={str(self.cache_dir)!r})"

    def db_status(self) -> DbStatus:
        db = self.cache_dir / "db"
        meta = db / "metadata.json"
        if not ((db / "trivy.db").is_file() and meta.is_file()):
            return DbStatus(self.cache_dir, present=False)
        try:
            updated = json.loads(meta.read_text()).get("UpdatedAt")
        except (OSError, ValueError):
            return DbStatus(self.cache_dir, present=False)
        return DbStatus(self.cache_dir, present=True, updated_at=updated)

    def _db_args(self) -> list[str]:
        """How the vuln scanner gets its DB; raises ``VulnDbMissing`` when it cannot."""
        if self.db_repository:
            # trivy downloads only when the cached DB is absent or stale.
            return ["--db-repository", self.db_repository]
        status = self.db_status()
        if not status.present:
            raise VulnDbMissing(
                f"cannot scan for vulnerabilities: {status.describe()} and no DB mirror "
                "(scan.db.repository) is configured"
            )
        return ["--skip-db-update"]

    def scan_image(
        self, ref: str, scanners: Sequence[Kind], archive: Path | None = None
    ) -> list[Finding]:
        """Scan the engine's image ``ref`` (or the ``docker save`` tarball ``archive``).

        Only the local engine is asked for the image: trivy must not fall back to
        pulling it from a registry.
        """
        args = ["image", *_OFFLINE_IMAGE, "--scanners", ",".join(scanners)]
        config_scanners = [s for s in scanners if s in ("secret", "misconfig")]
        if config_scanners:
            args += ["--image-config-scanners", ",".join(config_scanners)]
        if "vuln" in scanners:
            args += self._db_args()
        args += ["--input", str(archive)] if archive else ["--image-src", "docker", ref]
        return parse_report(self._run(args, f"image {ref}"))

    def scan_dockerfile(self, dockerfile: Path) -> list[Finding]:
        """Misconfigurations of one Dockerfile, whatever its file name."""
        pattern = f"dockerfile:^{re.escape(dockerfile.name)}$"
        args = ["config", "--misconfig-scanners", "dockerfile", "--file-patterns", pattern]
        return parse_report(self._run([*args, str(dockerfile)], f"Dockerfile {dockerfile}"))

    def _run(self, args: list[str], what: str) -> dict[str, Any]:
        binary = shutil.which(self.binary)
        if binary is None:
            raise ScanBlocked(f"cannot scan {what}: the {self.binary} binary is not on PATH")
        env = dict(os.environ)
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        # trivy's own deadline comes first so that it reports instead of being killed.
        own_timeout = f"{max(1, int(self.timeout_s * 0.9))}s"
        command = [binary, args[0], *_OFFLINE, "--timeout", own_timeout]
        command += ["--cache-dir", str(self.cache_dir), *args[1:]]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RequestTimeout(f"trivy: no report on {what} within {self.timeout_s:g}s") from None
        stderr = done.stderr.strip()[-_STDERR_TAIL:]
        if done.returncode != 0:
            if _DB_ERROR.search(stderr):
                raise VulnDbMissing(f"cannot scan {what} for vulnerabilities: {stderr}")
            raise ScanBlocked(f"trivy failed on {what} (exit {done.returncode}): {stderr}")
        try:
            report: dict[str, Any] = json.loads(done.stdout)
        except ValueError:
            raise ScanBlocked(f"trivy gave no JSON report on {what}: {stderr}") from None
        return report
