"""Runs that must stop, and stop cleanly: an approval nobody gives, integration tests
that fail, a registry that refuses the credentials. None of them may touch production.

The flows run on a worker; the production gate waits in the ``promote`` run that
``ship`` hands the release over to.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.pipeline_support import (
    END_TO_END,
    ENDED,
    App,
    Stack,
    allow_auto_approve,
    check,
    pipeline_data,
    promote_run,
    start_ship,
    wait_for,
    write_pipeline,
)
from tests.pipeline_support import app as app  # the per-test sample app
from tests.pipeline_support import stack as stack  # the shared session fixture
from tests.pipeline_support import worker as worker  # the session's worker, autouse

pytestmark = END_TO_END


def test_an_approval_timeout_rejects_and_the_run_ends_failed(
    stack: Stack, app: App, tmp_path: Path
) -> None:
    pipeline = write_pipeline(tmp_path / "pipeline.yaml", pipeline_data(app, approval_timeout="5s"))
    flow = start_ship(stack, pipeline, tmp_path / "ship.log")
    run_id = promote_run(stack, pipeline)
    stack.api.wait_state(run_id, ("PAUSED", *ENDED), timeout=150)
    # ship ends Completed at the handover (issue 9); the promote run holds the gate.
    assert flow.wait(60) == 0, flow.output[-3000:]
    # 5 s of approval timeout; the server's pause expiry fails the run first ("paused and
    # never resumed"), our automation reschedules it and the gate ends it Failed saying
    # why: it must not linger Paused.
    reason = "timeout counts as a rejection"
    final = wait_for(
        f"run {run_id} to end with {reason!r}",
        lambda: (
            s
            if (s := stack.api.state(run_id))["type"] in ENDED and reason in (s["message"] or "")
            else None
        ),
        120,
    )
    assert final["type"] == "FAILED", final
    assert "PAUSED" in stack.api.state_types(run_id)
    assert "ApprovalTimedOut" in final["message"], final["message"]
    wait_for(
        f"{reason!r} in the run's log",
        lambda: any(reason in line for line in stack.api.logs(run_id)) or None,
        30,
    )
    assert app.containers("production", "current") == []
    assert app.containers("production", "previous") == []


def test_failing_integration_tests_stop_the_run_before_the_approval(
    stack: Stack, app: App, tmp_path: Path
) -> None:
    wrong = check("serves the welcome page", "/version", "this text is not served")
    data = pipeline_data(app, integration=[check("health answers", "/health", "ok"), wrong])
    pipeline = write_pipeline(tmp_path / "pipeline.yaml", data)
    flow = start_ship(stack, pipeline, tmp_path / "ship.log")
    run_id = stack.api.wait_run(pipeline)
    final = stack.api.wait_state(run_id, ENDED, timeout=150)
    assert flow.wait(30) != 0
    assert final["type"] == "FAILED", final
    assert "PAUSED" not in stack.api.state_types(run_id)
    assert "serves the welcome page" in final["message"], final["message"]
    assert app.containers("production", "current") == []
    tests = next(
        a for a in stack.api.artifacts(run_id) if a["key"] == f"tests-{app.name}-integration"
    )
    assert "FAILED" in tests["data"] and "this text is not served" in tests["data"]


def test_a_wrong_registry_password_fails_without_showing_either_password(
    stack: Stack, app: App, tmp_path: Path
) -> None:
    wrong = secrets.token_urlsafe(18)
    secret_file = tmp_path / "registry-password"
    secret_file.write_text(wrong + "\n")
    data = allow_auto_approve(pipeline_data(app, password={"file": str(secret_file)}))
    pipeline = write_pipeline(tmp_path / "pipeline.yaml", data)
    flow = start_ship(stack, pipeline, tmp_path / "ship.log", "--auto-approve")
    run_id = stack.api.wait_run(pipeline)
    final = stack.api.wait_state(run_id, ENDED, timeout=150)
    assert flow.wait(30) != 0
    assert final["type"] == "FAILED", final
    assert "AuthenticationFailed" in flow.output or "refused" in final["message"], final["message"]
    seen = [final["message"], flow.output, *stack.api.logs(run_id)]
    seen += [str(a) for a in stack.api.artifacts(run_id)]
    for secret in (wrong, stack.password.get_secret_value()):
        assert not [text for text in seen if secret in text]
    assert app.containers("integration") == []
