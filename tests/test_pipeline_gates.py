"""Runs that must stop, and stop cleanly: an approval nobody gives, integration tests
that fail, a registry that refuses the credentials. None of them may touch production."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.pipeline_support import (
    App,
    Stack,
    check,
    pipeline_data,
    start_ship,
    write_pipeline,
)
from tests.pipeline_support import app as app  # the per-test sample app
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.trivy, pytest.mark.prefect]
ENDED = ("FAILED", "CRASHED", "COMPLETED", "CANCELLED")


def test_an_approval_timeout_rejects_and_the_run_ends_failed(
    stack: Stack, app: App, tmp_path: Path
) -> None:
    pipeline = write_pipeline(tmp_path / "pipeline.yaml", pipeline_data(app, approval_timeout="5s"))
    flow = start_ship(stack, pipeline, tmp_path / "ship.log")
    run_id = stack.api.wait_run(pipeline)
    stack.api.wait_state(run_id, ("PAUSED", *ENDED), timeout=150)
    # 5 s of approval timeout, then the flow's next poll: it must not linger Paused.
    final = stack.api.wait_state(run_id, ENDED, timeout=45)
    assert flow.wait(30) != 0
    assert final["type"] == "FAILED", final
    assert "PAUSED" in stack.api.state_types(run_id)
    # The server refuses every transition out of an expired pause and writes its own
    # failure message, so the flow's reason is read from the run's log.
    reason = "timeout counts as a rejection"
    assert any(reason in line for line in stack.api.logs(run_id)), final["message"]
    assert app.containers("production", "current") == []
    assert app.containers("production", "previous") == []
    assert "ApprovalRejected" in flow.output


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
    data = pipeline_data(app, password={"file": str(secret_file)})
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
