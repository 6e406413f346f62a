"""Freeze windows and the approval-evidence check in ``enter_environment``, with fakes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from conveyor.config import Pipeline
from conveyor.delivery import enter_environment
from conveyor.errors import ApprovalEvidenceInvalid, FreezeActive
from conveyor.release import ReleaseRecord
from conveyor.timeline import Timeline
from tests.test_delivery import NEW, FakeDriver, FakeRegistry, FakeSteps, _release, pipeline

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3Pm0vNqk2d7JZpGu6+7c3cFQWyJ2G3tEyMI1Q4hQ8g"


def steps_for(p: Pipeline, **kw: Any) -> FakeSteps:
    evidence = [
        {"kind": "integration", "digest": NEW, "environment": "integration", "passed": True}
    ]
    drivers = {e.name: FakeDriver(e.name, None) for e in p.environments}
    return FakeSteps(p, drivers, FakeRegistry(evidence=evidence), **kw)


def test_a_freeze_refuses_before_any_change(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    window = {
        "from": str(today - dt.timedelta(days=1)),
        "to": str(today + dt.timedelta(days=1)),
        "reason": "year end",
    }
    p = pipeline(tmp_path, freeze=[window])
    steps = steps_for(p)
    with pytest.raises(FreezeActive, match="production is frozen: year end") as raised:
        enter_environment(
            steps,
            p,
            p.environment("production"),
            _release(NEW, "1.1"),
            ReleaseRecord(release=_release(NEW, "1.1")),
            Timeline(),
        )
    assert f"until {today + dt.timedelta(days=2):%Y-%m-%d} 00:00 UTC" in str(raised.value)
    assert steps.calls == [] and steps.registry.tags == {}


def test_a_signed_environment_checks_the_evidence_before_the_first_change(tmp_path: Path) -> None:
    approval = {"approvers": [{"name": "alice", "key": KEY}], "identity": "signed", "timeout": "1h"}
    p = pipeline(tmp_path, approval=approval)
    steps = steps_for(p, bad_evidence="bob's signature does not verify")
    release = _release(NEW, "1.1")
    with pytest.raises(ApprovalEvidenceInvalid, match="does not verify"):
        enter_environment(
            steps,
            p,
            p.environment("production"),
            release,
            ReleaseRecord(release=release),
            Timeline(),
        )
    assert steps.calls[-1] == "verify approval production"
    assert not [c for c in steps.calls if c.startswith(("tag", "deploy", "preflight"))]
    good = steps_for(p)
    enter_environment(
        good, p, p.environment("production"), release, ReleaseRecord(release=release), Timeline()
    )
    assert good.calls.index("verify approval production") < good.calls.index("tag production-ready")
