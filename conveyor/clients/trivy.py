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
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class _ReportBody(BaseModel):
    # Trivy's JSON uses PascalCase; unknown fields (Match and Code among them) are dropped.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class _Secret(_ReportBody):
    rule_id: str = Field("", alias="RuleID")
    severity: str = Field("UNKNOWN", alias="Severity")
    title: str = Field("", alias="Title")
    start_line: int | None = Field(None, alias="StartLine")


class _Cause(_ReportBody):
    start_line: int | None = Field(None, alias="StartLine")


class _Misconfig(_ReportBody):
    id: str = Field("", alias="ID")
    status: str = Field("FAIL", alias="Status")
    severity: str = Field("UNKNOWN", alias="Severity")
    title: str = Field("", alias="Title")
    cause: _Cause | None = Field(None, alias="CauseMetadata")


class _Vuln(_ReportBody):
    id: str = Field("", alias="VulnerabilityID")
    severity: str = Field("UNKNOWN", alias="Severity")
    title: str | None = Field(None, alias="Title")
    pkg_path: str | None = Field(None, alias="PkgPath")
    pkg_name: str = Field("", alias="PkgName")
    installed_version: str = Field("", alias="InstalledVersion")
    fixed_version: str = Field("", alias="FixedVersion")


class _Result(_ReportBody):
    target: str = Field("", alias="Target")
    secrets: list[_Secret] | None = Field(None, alias="Secrets")
    misconfigs: list[_Misconfig] | None = Field(None, alias="Misconfigurations")
    vulns: list[_Vuln] | None = Field(None, alias="Vulnerabilities")

    def findings(self) -> list[Finding]:
        return (
            [self._finding("secret", s.rule_id, s, s.start_line) for s in self.secrets or []]
            + [
                self._finding("misconfig", m.id, m, m.cause.start_line if m.cause else None)
                for m in self.misconfigs or []
                if m.status == "FAIL"
            ]
            + [
                Finding(
                    kind="vuln",
                    id=v.id,
                    severity=v.severity,
                    title=v.title or v.id,
                    target=self.target,
                    location=v.pkg_path or self.target,
                    package=v.pkg_name,
                    installed_version=v.installed_version,
                    fixed_version=v.fixed_version,
                )
                for v in self.vulns or []
            ]
        )

    def _finding(
        self, kind: Kind, id: str, item: _Secret | _Misconfig, line: int | None
    ) -> Finding:
        location = f"{self.target}:{line}" if line else self.target
        return Finding(kind, id, item.severity, item.title, self.target, location)


class TrivyReport(_ReportBody):
    """One trivy JSON report (schema 2): what it found, per scanned target."""

    results: list[_Result] | None = Field(None, alias="Results")

    def findings(self) -> list[Finding]:
        """Typed findings; secret values are not kept."""
        return [f for result in self.results or [] for f in result.findings()]


def parse_report(text: str) -> list[Finding]:
    """The findings of trivy's JSON output ``text``; raises ``ValueError`` if it is not one
    (pydantic's ``ValidationError`` is one)."""
    return TrivyReport.model_validate_json(text).findings()


def _retarget(finding: Finding, was: str, target: str) -> Finding:
    """``finding`` with its target (and the location in it) named ``target``."""
    if finding.target != was:
        return finding
    location = finding.location
    if location == was or location.startswith(f"{was}:"):
        location = target + location[len(was) :]
    return replace(finding, target=target, location=location)


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
        if archive is None:
            return self._run([*args, "--image-src", "docker", ref], f"image {ref}")
        found = self._run([*args, "--input", str(archive)], f"image {ref}")
        # Named by the image, as a scan through the engine names them, not by the file.
        return [_retarget(f, str(archive), ref) for f in found]

    def scan_dockerfiles(self, dockerfiles: Mapping[str, Path]) -> dict[str, list[Finding]]:
        """Misconfigurations of several Dockerfiles in one trivy run (each run spends a
        second or more of CPU compiling its checks), by key; each finding as
        ``scan_dockerfile`` of that file alone reports it."""
        found: dict[str, list[Finding]] = {key: [] for key in dockerfiles}
        if not dockerfiles:
            return found
        with tempfile.TemporaryDirectory(prefix="conveyor-dockerfiles-") as tmp:
            # One folder per key, so files of one name stay apart and name their key.
            for i, file in enumerate(dockerfiles.values()):
                (Path(tmp) / str(i)).mkdir()
                shutil.copyfile(file, Path(tmp) / str(i) / file.name)
            names = sorted({re.escape(f.name) for f in dockerfiles.values()})
            pattern = f"dockerfile:(^|/)({'|'.join(names)})$"
            args = ["config", "--misconfig-scanners", "dockerfile", "--file-patterns", pattern]
            listed = ", ".join(str(f) for f in dockerfiles.values())
            findings = self._run([*args, tmp], f"Dockerfiles {listed}")
        keys = list(dockerfiles)
        for f in findings:
            folder, _, name = f.target.partition("/")
            found[keys[int(folder)]].append(_retarget(f, f.target, name))
        return found

    def scan_dockerfile(self, dockerfile: Path) -> list[Finding]:
        """Misconfigurations of one Dockerfile, whatever its file name."""
        pattern = f"dockerfile:^{re.escape(dockerfile.name)}$"
        args = ["config", "--misconfig-scanners", "dockerfile", "--file-patterns", pattern]
        return self._run([*args, str(dockerfile)], f"Dockerfile {dockerfile}")

    def _run(self, args: list[str], what: str) -> list[Finding]:
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
            return parse_report(done.stdout)
        except ValueError:
            raise ScanBlocked(f"trivy gave no JSON report on {what}: {stderr}") from None
