"""Freeze windows and the approval-evidence check in ``enter_environment``, with fakes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from conveyor.approvals.policy import required_approvers
from conveyor.config import Pipeline
from conveyor.delivery import USUAL, Entry, enter_environment
from conveyor.errors import ApprovalEvidenceInvalid, FreezeActive
from conveyor.release import Release, ReleaseRecord
from conveyor.timeline import Timeline
from tests.test_delivery import NEW, FakeDriver, FakeRegistry, FakeSteps, _release, pipeline

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3Pm0vNqk2d7JZpGu6+7c3cFQWyJ2G3tEyMI1Q4hQ8g"


def steps_for(p: Pipeline, **kw: Any) -> FakeSteps:
    evidence = [
        {"kind": "integration", "digest": NEW, "environment": "integration", "passed": True}
    ]
    drivers = {e.name: FakeDriver(e.name, None) for e in p.environments}
    return FakeSteps(p, drivers, FakeRegistry(evidence=evidence), **kw)


def _year_end() -> dict[str, str]:
    """A freeze window from yesterday to tomorrow (UTC)."""
    today = dt.datetime.now(dt.UTC).date()
    return {
        "from": str(today - dt.timedelta(days=1)),
        "to": str(today + dt.timedelta(days=1)),
        "reason": "year end",
    }


def _into_production(
    steps: FakeSteps,
    p: Pipeline,
    release: Release,
    record: ReleaseRecord | None = None,
    entry: Entry = USUAL,
) -> None:
    record = record or ReleaseRecord(release=release)
    enter_environment(steps, p, p.environment("production"), release, record, Timeline(), entry)


def test_a_freeze_refuses_before_any_change(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    p = pipeline(tmp_path, freeze=[_year_end()])
    steps = steps_for(p)
    with pytest.raises(FreezeActive, match="production is frozen: year end") as raised:
        _into_production(steps, p, _release(NEW, "1.1"))
    assert f"until {today + dt.timedelta(days=2):%Y-%m-%d} 00:00 UTC" in str(raised.value)
    assert steps.calls == [] and steps.registry.tags == {}


def test_a_signed_environment_checks_the_evidence_before_the_first_change(tmp_path: Path) -> None:
    approval = {"approvers": [{"name": "alice", "key": KEY}], "identity": "signed", "timeout": "1h"}
    p = pipeline(tmp_path, approval=approval)
    steps = steps_for(p, bad_evidence="bob's signature does not verify")
    release = _release(NEW, "1.1")
    with pytest.raises(ApprovalEvidenceInvalid, match="does not verify"):
        _into_production(steps, p, release)
    assert steps.calls[-1] == "verify approval production"
    assert not [c for c in steps.calls if c.startswith(("tag", "deploy", "preflight"))]
    good = steps_for(p)
    _into_production(good, p, release)
    assert good.calls.index("verify approval production") < good.calls.index("tag production-ready")


def _frozen_pipeline(tmp_path: Path, required: int = 1) -> Pipeline:
    approval = {"approvers": ["alice", "bob"], "timeout": "1h", "required": required}
    return pipeline(tmp_path, freeze=[_year_end()], approval=approval)


def test_break_glass_goes_into_a_freeze_with_one_approver_more_and_is_marked(
    tmp_path: Path,
) -> None:
    p = _frozen_pipeline(tmp_path)
    steps = steps_for(p)
    release = _release(NEW, "1.1")
    record = ReleaseRecord(release=release)
    _into_production(steps, p, release, record, Entry(break_glass="payment outage"))
    assert steps.glass is not None and steps.glass.reason == "payment outage"
    assert steps.glass.window is not None and steps.glass.window.startswith("year end")
    production = p.environment("production").approval
    assert production is not None and required_approvers(production, steps.glass) == 2
    assert steps.registry.tags == {"production-ready": NEW}
    (note,) = [n for n in record.notes if "BREAK-GLASS" in n]
    assert note.startswith("BREAK-GLASS during year end") and "payment outage" in note
    assert "one approver more than usual" in note


def test_break_glass_outside_a_freeze_is_marked_and_asks_no_extra_approver(
    tmp_path: Path,
) -> None:
    approval = {"approvers": ["alice", "bob"], "timeout": "1h", "required": 2}
    p = pipeline(tmp_path, approval=approval)
    steps = steps_for(p)
    release = _release(NEW, "1.1")
    record = ReleaseRecord(release=release)
    production = p.environment("production")
    _into_production(steps, p, release, record, Entry(break_glass="hotfix"))
    assert steps.glass is not None and steps.glass.window is None
    assert production.approval is not None
    assert required_approvers(production.approval, steps.glass) == 2
    assert "BREAK-GLASS outside any freeze window: hotfix into production (no extra approver)" in (
        record.notes
    )


def test_a_break_glass_does_not_reuse_an_earlier_approval_inside_a_freeze(
    tmp_path: Path,
) -> None:
    p = _frozen_pipeline(tmp_path)
    steps = steps_for(p)
    release = _release(NEW, "1.1")
    earlier = {"environment": "production", "decision": "approve", "approver": "alice"}
    steps.registry.evidence.append(
        {
            "kind": "approval",
            "digest": NEW,
            "environment": "production",
            "passed": True,
            "payload": earlier,
        }
    )
    _into_production(steps, p, release, entry=Entry(break_glass="payment outage"))
    assert "approve production" in steps.calls
