"""The Trivy gate: scan an image (and its Dockerfile), apply the policy, block or pass.

Each finding gets exactly one verdict. An ignore entry ignores its id up to and
including its ``expires`` date; after that the finding is judged as if the entry did
not exist and the summary names the expired entry, so lapsed exceptions are seen.
A missing vulnerability DB is never a silent pass: it blocks, or with
``db.on_missing: warn`` the scan runs without the vuln scanner and says so.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from conveyor.clients.trivy import Finding, Kind, Trivy
from conveyor.config.scan import IgnoreEntry, ScanPolicy
from conveyor.errors import ScanBlocked, VulnDbMissing

Verdict = Literal["blocking", "ignored", "below-threshold", "unfixed"]
SEVERITY_ORDER = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]
_MAX_LISTED = 50


def _rank(severity: str) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


@dataclass(frozen=True)
class Evaluated:
    finding: Finding
    verdict: Verdict
    # The entry that matched the finding's id, active or expired.
    ignore: IgnoreEntry | None = None
    expired: bool = False


@dataclass(frozen=True)
class ScanResult:
    target: str
    evaluated: list[Evaluated]
    scanners: list[str]
    summary: str
    warnings: list[str] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [e.finding for e in self.evaluated]

    @property
    def blocking(self) -> list[Finding]:
        return [e.finding for e in self.evaluated if e.verdict == "blocking"]

    @property
    def passed(self) -> bool:
        return not self.blocking


def _judge(finding: Finding, policy: ScanPolicy, today: dt.date) -> Evaluated:
    entry = next((i for i in policy.ignore if i.id == finding.id), None)
    expired = entry is not None and today > entry.expires
    if entry is not None and not expired:
        return Evaluated(finding, "ignored", entry)
    if finding.severity not in policy.blocking:
        return Evaluated(finding, "below-threshold", entry, expired)
    if policy.fixed_only and finding.kind == "vuln" and not finding.fixed_version:
        return Evaluated(finding, "unfixed", entry, expired)
    return Evaluated(finding, "blocking", entry, expired)


def _severities(items: Iterable[Evaluated]) -> str:
    counts = Counter(e.finding.severity for e in items)
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=_rank))


def summarize(evaluated: list[Evaluated], warnings: list[str]) -> str:
    """One line: blocking count first, then every exception the policy made and why."""
    parts = [f"{sum(e.verdict == 'blocking' for e in evaluated)} blocking"]
    by_entry: dict[tuple[IgnoreEntry, bool], list[Evaluated]] = {}
    for e in evaluated:
        if e.ignore is not None:
            by_entry.setdefault((e.ignore, e.expired), []).append(e)
    for (entry, expired), items in by_entry.items():
        when = f"ignore EXPIRED on {entry.expires}" if expired else f"ignored until {entry.expires}"
        parts.append(f"{_severities(items)} {entry.id} {when} ({entry.reason})")
    below = [e for e in evaluated if e.verdict == "below-threshold" and not e.expired]
    if below:
        parts.append(f"{_severities(below)} below the blocking severities")
    unfixed = [e for e in evaluated if e.verdict == "unfixed"]
    if unfixed:
        parts.append(f"{_severities(unfixed)} without a fix (fixed_only)")
    parts += [f"WARNING: {w}" for w in warnings]
    return "; ".join(parts)


def evaluate(
    target: str,
    findings: list[Finding],
    policy: ScanPolicy,
    scanners: list[str],
    warnings: list[str] | None = None,
    today: dt.date | None = None,
) -> ScanResult:
    """Apply ``policy`` to ``findings``; never raises (``enforce`` does)."""
    day = today or dt.datetime.now(dt.UTC).date()
    judged = [_judge(f, policy, day) for f in findings]
    judged.sort(key=lambda e: (e.verdict != "blocking", _rank(e.finding.severity), e.finding.id))
    notes = list(warnings or [])
    return ScanResult(target, judged, scanners, summarize(judged, notes), notes)


def describe(finding: Finding) -> str:
    where = finding.location or finding.target
    what = f"{finding.severity} {finding.kind} {finding.id}: {finding.title} at {where}"
    if finding.kind == "vuln":
        fix = finding.fixed_version or "no fix yet"
        what += f" ({finding.package} {finding.installed_version}, fixed in: {fix})"
    return what


def enforce(result: ScanResult) -> ScanResult:
    """Raise ``ScanBlocked`` naming every blocking finding; return ``result`` otherwise."""
    blocking = result.blocking
    if not blocking:
        return result
    lines = [describe(f) for f in blocking[:_MAX_LISTED]]
    if len(blocking) > _MAX_LISTED:
        lines.append(f"... and {len(blocking) - _MAX_LISTED} more")
    listing = "\n  ".join(lines)
    raise ScanBlocked(f"scan of {result.target} blocked: {result.summary}\n  {listing}")


def trivy_for(policy: ScanPolicy, binary: str = "trivy", docker_host: str | None = None) -> Trivy:
    return Trivy(
        binary=binary,
        cache_dir=policy.db.cache_dir,
        db_repository=policy.db.repository,
        timeout_s=policy.timeout_s,
        docker_host=docker_host,
    )


def _scan_image(
    trivy: Trivy,
    image: str,
    scanners: list[Kind],
    policy: ScanPolicy,
    archive: Path | None,
    warnings: list[str],
) -> tuple[list[Finding], list[str]]:
    if not scanners:
        return [], []
    try:
        return trivy.scan_image(image, scanners, archive), list(scanners)
    except VulnDbMissing as exc:
        if policy.db.on_missing == "fail":
            raise VulnDbMissing(
                f"{exc}\nThe gate fails closed without a vulnerability DB: provide one "
                "(scan.db.cache_dir or scan.db.repository) or set scan.db.on_missing: warn."
            ) from None
        warnings.append(f"vulnerabilities NOT scanned: {exc}")
    rest: list[Kind] = [s for s in scanners if s != "vuln"]
    return (trivy.scan_image(image, rest, archive) if rest else []), list(rest)


def scans_dockerfiles(policy: ScanPolicy) -> bool:
    return policy.dockerfile and "misconfig" in policy.scanners


def scan(
    trivy: Trivy,
    image: str,
    policy: ScanPolicy,
    dockerfile: Path | None = None,
    archive: Path | None = None,
    today: dt.date | None = None,
    log: Callable[[str], None] | None = None,
    dockerfile_findings: Callable[[], list[Finding]] | None = None,
) -> ScanResult:
    """Scan ``image`` (and ``dockerfile`` when the policy says so) and judge the findings.

    ``dockerfile_findings`` waits for the Dockerfile's findings from a scan already
    under way (a release's Dockerfiles in one trivy run), after the image's scan;
    ``dockerfile`` is then not scanned again. With a Dockerfile's findings the image
    itself is not scanned for misconfigurations (see below). Raises ``ScanBlocked`` only when it cannot scan (no DB with
    on_missing=fail, trivy failing); blocking findings are in the result for the
    caller to ``enforce``.
    """
    warnings: list[str] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        # Two trivy processes side by side: each spends most of its time starting up.
        of_dockerfile = None
        if dockerfile_findings is None and dockerfile is not None and scans_dockerfiles(policy):
            of_dockerfile = pool.submit(trivy.scan_dockerfile, dockerfile)
        # Trivy's misconfig checks of an image are its Dockerfile checks, run on the
        # instructions it rebuilds from the history after the base image: those of the
        # Dockerfile scanned here. Run per image they cost ~1.5 CPU-s each compiling the
        # checks, for findings the Dockerfile's scan already has (and names by line).
        covered = dockerfile_findings is not None or of_dockerfile is not None
        kinds = [k for k in policy.scanners if not (covered and k == "misconfig")]
        findings, scanners = _scan_image(trivy, image, kinds, policy, archive, warnings)
        if dockerfile_findings is not None:
            findings += dockerfile_findings()
            scanners.append("dockerfile")
        if of_dockerfile is not None:
            findings += of_dockerfile.result()
            scanners.append("dockerfile")
    result = evaluate(image, findings, policy, scanners, warnings, today)
    if log is not None:
        log(f"scan of {image}: {result.summary}")
    return result


def findings_table(result: ScanResult) -> list[dict[str, str]]:
    """Rows for a Prefect table artifact, blocking first; no secret values (none are kept)."""
    rows = []
    for e in result.evaluated:
        f = e.finding
        note = ""
        if e.ignore is not None:
            state = "expired" if e.expired else "until"
            note = f"ignore {state} {e.ignore.expires}: {e.ignore.reason}"
        rows.append(
            {
                "verdict": e.verdict,
                "severity": f.severity,
                "kind": f.kind,
                "id": f.id,
                "title": f.title,
                "location": f.location or f.target,
                "package": f"{f.package} {f.installed_version}".strip(),
                "fixed_version": f.fixed_version,
                "note": note,
            }
        )
    return rows
