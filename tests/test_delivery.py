"""``enter_environment``'s branches, table-driven, with a hand-written driver and
registry: the order of the steps and the verdicts, without Prefect or a cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conveyor.approvals.statement import BreakGlass
from conveyor.config import EnvironmentConfig, Pipeline, parse_pipeline
from conveyor.delivery import enter_environment
from conveyor.drivers.base import DeployedState, DeployOutcome, Instance
from conveyor.errors import (
    ApprovalEvidenceInvalid,
    ApprovalRejected,
    ConnectFailed,
    ConveyorError,
    DeploymentFailed,
    EvidenceMissing,
    HealthCheckFailed,
    IntegrationTestsFailed,
    PreflightFailed,
    RolledBack,
    ServerError,
    VerificationFailed,
)
from conveyor.release import ApprovalRecord, Release, ReleaseRecord, Verification
from conveyor.timeline import Timeline
from tests.parts import two_environments

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


def _release(digest: str, version: str) -> Release:
    return Release(
        app="hello",
        registry="127.0.0.1:5000",
        repository="conveyor/hello",
        digest=digest,
        version=version,
        revision=None,
    )


class FakeDriver:
    """One environment: what runs, and what ran before it."""

    def __init__(self, environment: str, runs: Release | None) -> None:
        self.environment = environment
        self.current = runs
        self.previous: Release | None = None

    def status(self) -> DeployedState:
        if self.current is None:
            return DeployedState(environment=self.environment, digest=None, version=None)
        return DeployedState(
            environment=self.environment,
            digest=self.current.digest,
            version=self.current.version,
            instances=(Instance("127.0.0.1", 1, healthy=True),),
            previous_digest=self.previous.digest if self.previous else None,
        )

    def deploy(self, release: Release) -> DeployOutcome:
        if self.current == release:
            return DeployOutcome(self.status(), False, "already there")
        self.previous, self.current = self.current, release
        return DeployOutcome(self.status(), True, "deployed")

    def rollback(self) -> DeployedState:
        assert self.previous is not None, "rolled back with nothing to return to"
        self.current, self.previous = self.previous, None
        return self.status()


@dataclass
class FakeRegistry:
    """Tags and the evidence attached to digests."""

    tags: dict[str, str] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeSteps:
    pipeline: Pipeline
    drivers: dict[str, FakeDriver]
    registry: FakeRegistry
    answer: str = "approve"
    checks_fail: bool = False
    bad_evidence: str = ""
    # An exception the step raises: "checks", "evidence" (the tests evidence), "preflight"
    # or "deploy".
    fault: tuple[str, ConveyorError] | None = None
    calls: list[str] = field(default_factory=list)
    glass: BreakGlass | None = None  # what the last approval was asked with

    def _fault(self, step: str) -> None:
        if self.fault is not None and self.fault[0] == step:
            raise self.fault[1]

    def current_state(self, env: EnvironmentConfig) -> DeployedState:
        return self.drivers[env.name].status()

    def require_proof(self, release: Release, previous: EnvironmentConfig) -> None:
        self.calls.append(f"proof {previous.name}")
        if not any(
            e["digest"] == release.digest and e["environment"] == previous.name and e["passed"]
            for e in self.registry.evidence
        ):
            raise EvidenceMissing(f"{release.short} has no passing results from {previous.name}")

    def earlier_approval(self, release: Release, env: EnvironmentConfig) -> ApprovalRecord | None:
        for e in self.registry.evidence:
            if e["kind"] == "approval" and e["digest"] == release.digest:
                return ApprovalRecord.model_validate(e["payload"])
        return None

    def approve(
        self,
        env: EnvironmentConfig,
        release: Release,
        evidence: list[str],
        auto: bool,
        glass: BreakGlass | None = None,
    ) -> ApprovalRecord:
        self.calls.append(f"approve {env.name}")
        self.glass = glass
        if self.answer == "reject":
            raise ApprovalRejected(f"bob rejected {release.version} for {env.name}: freeze")
        return ApprovalRecord(environment=env.name, decision="approve", approver="alice")

    def attach_evidence(
        self, release: Release, kind: str, environment: str, payload: dict[str, Any]
    ) -> None:
        self.calls.append(f"attach {kind} {environment}")
        if kind == "tests":
            self._fault("evidence")
        self.registry.evidence.append(
            {
                "kind": kind,
                "digest": release.digest,
                "environment": environment,
                "passed": True,
                "payload": payload,
            }
        )

    def verify_approval(self, release: Release, env: EnvironmentConfig) -> None:
        self.calls.append(f"verify approval {env.name}")
        if self.bad_evidence:
            raise ApprovalEvidenceInvalid("does not verify", [self.bad_evidence])

    def tag_release(self, release: Release, env: EnvironmentConfig) -> None:
        self.calls.append(f"tag {env.tag}")
        self.registry.tags[env.tag] = release.digest

    def preflight(self, env: EnvironmentConfig, release: Release) -> None:
        self.calls.append(f"preflight {env.name}")
        self._fault("preflight")

    def deploy(self, env: EnvironmentConfig, release: Release) -> DeployOutcome:
        self.calls.append(f"deploy {env.name}")
        # A failed deploy leaves what ran before, as the drivers put it back.
        self._fault("deploy")
        return self.drivers[env.name].deploy(release)

    def run_checks(self, env: EnvironmentConfig, release: Release) -> Verification:
        self.calls.append(f"verify {env.name}")
        self._fault("checks")
        failed = 1 if self.checks_fail else 0
        return Verification(
            environment=env.name, passed=1 - failed, failed=failed, summary="health: ok"
        )

    def rollback(self, env: EnvironmentConfig) -> DeployedState:
        self.calls.append(f"rollback {env.name}")
        return self.drivers[env.name].rollback()

    # Ordering, superseding and the deploy window are tested against a real server
    # (test_pipeline_durable); here they must only leave the branches as they are.
    def refuse_older(
        self, env: EnvironmentConfig, release: Release, running: DeployedState, reason: str
    ) -> None:
        pass

    def supersede_older(self, env: EnvironmentConfig, release: Release) -> None:
        pass

    @contextmanager
    def deploy_window(self, env: EnvironmentConfig) -> Iterator[None]:
        yield


def pipeline(tmp_path: Path, **production: Any) -> Pipeline:
    """integration, then production behind alice's approval, with ``production``'s extra keys."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    gated = {
        "driver": {"kind": "docker", "port": 2},
        "approval": {"approvers": ["alice"], "timeout": "1h"},
        **production,
    }
    return parse_pipeline(two_environments(tmp_path, gated), "pipeline.yaml", tmp_path)


@dataclass(frozen=True)
class Case:
    environment: str
    runs: str | None  # what the environment runs before: "new", "old" or nothing
    answer: str = "approve"
    checks_fail: bool = False
    raises: type[ConveyorError] | None = None
    calls: tuple[str, ...] = ()
    runs_after: str | None = "new"
    approvals: tuple[str, ...] = ()
    fault: tuple[str, ConveyorError] | None = None
    # What the environment's tag names afterwards (it names "old" before when old runs).
    tag_after: str | None = "new"


PROOF = ("proof integration",)
ASK = (*PROOF, "approve production", "attach approval production")
INTO_PRODUCTION = (*ASK, "preflight production", "tag production-ready", "deploy production")
INTO_INTEGRATION = ("preflight integration", "tag integration-ready", "deploy integration")
REGISTRY_503 = ServerError("registry 127.0.0.1:5000: PUT ... answered 503", 503)
CASES = {
    "already deployed: no approval, no pre-flight, nothing changes": Case(
        "production",
        runs="new",
        calls=(
            *PROOF,
            "tag production-ready",
            "deploy production",
            "verify production",
            "attach tests production",
        ),
    ),
    "first deploy into integration": Case(
        "integration",
        runs=None,
        calls=(*INTO_INTEGRATION, "verify integration", "attach tests integration"),
    ),
    "first deploy into production asks and records the approval": Case(
        "production",
        runs="old",
        calls=(*INTO_PRODUCTION, "verify production", "attach tests production"),
        approvals=("approve",),
    ),
    "failed verification rolls back to the release that ran before, tag included": Case(
        "production",
        runs="old",
        checks_fail=True,
        raises=RolledBack,
        calls=(
            *INTO_PRODUCTION,
            "verify production",
            "attach tests production",
            "rollback production",
            "tag production-ready",
        ),
        runs_after="old",
        approvals=("approve",),
        tag_after="old",
    ),
    "no healthy instance is a failed check: rolled back": Case(
        "production",
        runs="old",
        fault=("checks", HealthCheckFailed("no instance became healthy in 60s")),
        raises=RolledBack,
        calls=(
            *INTO_PRODUCTION,
            "verify production",
            "rollback production",
            "tag production-ready",
        ),
        runs_after="old",
        approvals=("approve",),
        tag_after="old",
    ),
    "the registry failing to record evidence after healthy checks: an error, no rollback": Case(
        "production",
        runs="old",
        fault=("evidence", REGISTRY_503),
        raises=ServerError,
        calls=(*INTO_PRODUCTION, "verify production", "attach tests production"),
        approvals=("approve",),
    ),
    "the cluster unreachable while checking: an error, no rollback": Case(
        "production",
        runs="old",
        fault=("checks", ConnectFailed("marathon 127.0.0.1:8082: connection refused")),
        raises=ConnectFailed,
        calls=(*INTO_PRODUCTION, "verify production"),
        approvals=("approve",),
    ),
    "a failed pre-flight leaves the tag where it was": Case(
        "production",
        runs="old",
        fault=(
            "preflight",
            PreflightFailed("pre-flight of production failed", ["vcenter: connection refused"]),
        ),
        raises=PreflightFailed,
        calls=(*ASK, "preflight production"),
        runs_after="old",
        approvals=("approve",),
        tag_after="old",
    ),
    "a failed deploy the driver put back takes the tag back to what runs": Case(
        "production",
        runs="old",
        fault=("deploy", DeploymentFailed("member 'api' did not become healthy; group back")),
        raises=DeploymentFailed,
        calls=(*INTO_PRODUCTION, "tag production-ready"),
        runs_after="old",
        approvals=("approve",),
        tag_after="old",
    ),
    "failed verification of a first deploy fails on its checks, no rollback": Case(
        "production",
        runs=None,
        checks_fail=True,
        raises=VerificationFailed,
        calls=(*INTO_PRODUCTION, "verify production", "attach tests production"),
        approvals=("approve",),
    ),
    "failed integration tests are integration failures": Case(
        "integration",
        runs=None,
        checks_fail=True,
        raises=IntegrationTestsFailed,
        calls=(*INTO_INTEGRATION, "verify integration", "attach tests integration"),
    ),
    "a rejected approval stops before the tag and the deploy, and is kept with the image": Case(
        "production",
        runs="old",
        answer="reject",
        raises=ApprovalRejected,
        calls=(*PROOF, "approve production", "attach approval production"),
        runs_after="old",
        approvals=("reject",),
        tag_after="old",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_enter_environment(case: Case, tmp_path: Path) -> None:
    config = pipeline(tmp_path)
    old, new = _release(OLD, "1.0"), _release(NEW, "1.1")
    runs = {"new": new, "old": old, None: None}
    drivers = {e.name: FakeDriver(e.name, None) for e in config.environments}
    drivers[case.environment] = FakeDriver(case.environment, runs[case.runs])
    passed = {"kind": "integration", "digest": NEW, "environment": "integration", "passed": True}
    env = config.environment(case.environment)
    tags = {env.tag: OLD} if case.runs == "old" else {}
    registry = FakeRegistry(tags=tags, evidence=[{**passed, "payload": {}}])
    steps = FakeSteps(
        config,
        drivers,
        registry,
        answer=case.answer,
        checks_fail=case.checks_fail,
        fault=case.fault,
    )
    record = ReleaseRecord(release=new)
    if case.raises is None:
        enter_environment(steps, config, env, new, record, Timeline())
    else:
        with pytest.raises(case.raises):
            enter_environment(steps, config, env, new, record, Timeline())
    assert tuple(steps.calls) == case.calls
    assert drivers[case.environment].current == runs[case.runs_after]
    assert tuple(a.decision for a in record.approvals) == case.approvals
    assert registry.tags.get(env.tag) == {"new": NEW, "old": OLD, None: None}[case.tag_after]


def test_an_approval_an_earlier_run_recorded_is_not_asked_again(tmp_path: Path) -> None:
    config = pipeline(tmp_path)
    new = _release(NEW, "1.1")
    approval = ApprovalRecord(environment="production", decision="approve", approver="alice")
    registry = FakeRegistry(
        evidence=[
            {"kind": "integration", "digest": NEW, "environment": "integration", "passed": True},
            {
                "kind": "approval",
                "digest": NEW,
                "environment": "production",
                "passed": True,
                "payload": approval.model_dump(mode="json"),
            },
        ]
    )
    drivers = {e.name: FakeDriver(e.name, None) for e in config.environments}
    steps = FakeSteps(config, drivers, registry)
    record = ReleaseRecord(release=new)
    enter_environment(steps, config, config.environment("production"), new, record, Timeline())
    assert "approve production" not in steps.calls
    assert not [c for c in steps.calls if c.startswith("attach approval")]
    assert [a.approver for a in record.approvals] == ["alice"]


def test_a_release_without_proof_from_the_environment_before_goes_no_further(
    tmp_path: Path,
) -> None:
    config = pipeline(tmp_path)
    new = _release(NEW, "1.1")
    drivers = {e.name: FakeDriver(e.name, None) for e in config.environments}
    steps = FakeSteps(config, drivers, FakeRegistry())
    timeline = Timeline()
    with pytest.raises(EvidenceMissing):
        enter_environment(
            steps,
            config,
            config.environment("production"),
            new,
            ReleaseRecord(release=new),
            timeline,
        )
    assert steps.calls == ["proof integration"]
    assert timeline.rows[-1]["stage"] == "evidence production"
    assert timeline.rows[-1]["outcome"] == "failed"
