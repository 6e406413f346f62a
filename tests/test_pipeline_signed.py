"""A signed 2-of-2 production gate end to end, on the worker and the real parts.

One ship, started by carol with a signed start (``conveyor ship --as carol --key``):
the promote run it hands over to waits at a gate that takes only answers signed with
the approvers' SSH keys (``ssh-keygen -Y sign``) and needs two distinct approvers;
carol may not approve it. alice approves (one of two, still waiting), alice again
(she counts once), bob decides, and ``conveyor verify`` checks the evidence the
registry keeps. Answers go through the API the UI's Resume form calls, with the line
``conveyor approve --print`` makes. Break-glass, rejections and timeouts are tested at
library and flow level (tests/test_approval_*.py, tests/test_delivery_gates.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from typer.testing import CliRunner

from conveyor.cli.main import app as cli
from conveyor.cli.sign_answer import signed_token
from tests.approval_support import Key, make_key
from tests.pipeline_support import (
    END_TO_END,
    ENDED,
    PASSWORD_ENV,
    App,
    Stack,
    new_app,
    pipeline_data,
    port_of,
    promote_run,
    served,
    served_version,
    start_ship,
    write_pipeline,
)
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = END_TO_END


@dataclass
class Signed:
    """What the one signed ship did, observed while it ran."""

    app: App
    data: dict[str, Any]
    pipeline: Path
    run_id: str
    digest: str
    ship_code: int
    ship_output: str
    first_ask: str  # the form's description at the first pause
    after_first: dict[str, Any]
    after_second: dict[str, Any]
    production_while_waiting: int
    final: dict[str, Any]


def _answer(stack: Stack, run_id: str, digest: str, app: str, key: Key) -> None:
    """A signed approval as the UI's Resume form sends it, with `conveyor approve --print`'s line."""
    request = {"app": app, "environment": "production", "digest": digest, "run_id": run_id}
    token = signed_token(
        request, decision="approve", approver=key.name, comment="reviewed", key=key.private
    )
    run_input = {
        "decision": "approve",
        "approver": key.name,
        "digest": digest,
        "environment": "production",
        "comment": "reviewed",
        "signature": token,
    }
    # The support's poster: it tries again when SQLite answers 503 (database locked).
    answered = stack.api._post(f"/flow_runs/{run_id}/resume", {"run_input": run_input})
    assert answered["status"] == "ACCEPT", answered


def _waiting_request(stack: Stack, run_id: str, pause_key: str) -> dict[str, Any]:
    response = stack.api.http.get(f"/flow_runs/{run_id}/input/conveyor-request-{pause_key}")
    response.raise_for_status()
    return dict(json.loads(response.text))


@pytest.fixture(scope="module")
def signed(
    stack: Stack, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Signed]:
    root = tmp_path_factory.mktemp("signed")
    keys = {name: make_key(root, name) for name in ("alice", "bob", "carol")}
    app = new_app(stack, docker_client, root)
    with served(stack, root):
        try:
            data = pipeline_data(app)
            production = data["environments"][1]
            production["approval"].update(
                approvers=[{"name": k.name, "key": k.public} for k in keys.values()],
                identity="signed",
                required=2,
            )
            pipeline = write_pipeline(root / "pipeline.yaml", data)
            carol = str(keys["carol"].private)
            flow = start_ship(stack, pipeline, root / "ship.log", "--as", "carol", "--key", carol)
            run_id = promote_run(stack, pipeline)
            first = stack.api.wait_state(run_id, ("PAUSED", *ENDED), timeout=150)
            ship_code = flow.wait(120)
            first_ask = _description(stack, run_id, first)
            digest = stack.api.run(run_id)["parameters"]["digest"]
            prefix = f"approval-production-{digest[7:19]}-"
            _answer(stack, run_id, digest, app.name, keys["alice"])
            after_first = stack.api.wait_state_key(run_id, f"{prefix}2", timeout=90)
            assert after_first["type"] == "PAUSED", (after_first, stack.api.logs(run_id)[-15:])
            _answer(stack, run_id, digest, app.name, keys["alice"])
            after_second = stack.api.wait_state_key(run_id, f"{prefix}3", timeout=90)
            waiting = len(app.containers("production"))
            _answer(stack, run_id, digest, app.name, keys["bob"])
            final = stack.api.wait_state(run_id, ENDED, timeout=180)
            yield Signed(
                app,
                data,
                pipeline,
                run_id,
                digest,
                ship_code,
                flow.output,
                first_ask,
                after_first,
                after_second,
                waiting,
                final,
            )
        finally:
            app.clean()


def _description(stack: Stack, run_id: str, state: dict[str, Any]) -> str:
    key = (state.get("state_details") or {}).get("pause_key")
    response = stack.api.http.get(f"/flow_runs/{run_id}/input/suspended-{key}-description")
    response.raise_for_status()
    return str(json.loads(response.text))


def test_the_signed_start_is_passed_to_the_gate_and_its_author_may_not_approve(
    signed: Signed,
) -> None:
    assert signed.ship_code == 0, signed.ship_output[-3000:]
    assert "0 of 2: waiting for 2 approvers" in signed.first_ask
    assert "started by carol (signature verified, key SHA256:" in signed.first_ask
    assert "carol may not approve: started this run" in signed.first_ask


def test_one_signed_approval_of_two_keeps_the_release_waiting(signed: Signed, stack: Stack) -> None:
    assert signed.after_first["type"] == "PAUSED"
    key = signed.after_first["state_details"]["pause_key"]
    request = _waiting_request(stack, signed.run_id, key)
    assert request["progress"] == "1 of 2: alice approved; waiting for one more"
    assert request["counted"] == [key.rsplit("-", 1)[0] + "-1"]


def test_a_second_approval_of_the_same_person_counts_once(signed: Signed, stack: Stack) -> None:
    assert signed.after_second["type"] == "PAUSED"
    key = signed.after_second["state_details"]["pause_key"]
    assert _waiting_request(stack, signed.run_id, key)["progress"] == (
        "1 of 2: alice approved; waiting for one more"
    )
    assert signed.production_while_waiting == 0


def test_two_distinct_signed_approvers_let_the_release_into_production(
    signed: Signed, stack: Stack
) -> None:
    assert signed.final["type"] == "COMPLETED", stack.api.logs(signed.run_id)[-20:]
    production = signed.app.current("production")
    assert production.labels["conveyor.digest"] == signed.digest
    assert served_version(port_of(signed.data, "production")) == signed.app.versions[-1]
    logs = stack.api.logs(signed.run_id)
    assert any("2 of 2: alice, bob approved" in line for line in logs), logs[-20:]


def test_conveyor_verify_confirms_the_signed_evidence(
    signed: Signed, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, stack.password.get_secret_value())
    done = CliRunner().invoke(
        cli,
        ["verify", signed.digest, "-p", str(signed.pipeline), "--env", "production", "--json"],
    )
    assert done.exit_code == 0, done.output
    found = json.loads(done.output)
    assert found["problems"] == []
    approval = next(r for r in found["evidence"] if r["kind"] == "approval")
    assert approval["ok"] and approval["environment"] == "production"
    details = "\n".join(approval["details"])
    assert "alice approved" in details and "bob approved" in details
    assert details.count(": verified") == 2
    assert "started by carol (signature verified" in details
