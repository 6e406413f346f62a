"""``ship`` end to end with a person at the production gate, on the real parts.

One release goes all the way (``ship`` hands it over to a ``promote`` run that waits
at the gate; its approval is answered through the API the UI calls, after a refused
answer from someone off the allowlist); a second one of the same app is rejected from
the terminal and must leave production as it was. The flows run on a worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from conveyor.clients.registry import RegistryClient
from conveyor.config import load_pipeline
from tests.pipeline_support import (
    END_TO_END,
    ENDED,
    App,
    Stack,
    conveyor,
    drivers,
    kept_app,
    pipeline_data,
    port_of,
    promote_run,
    serve,
    served_version,
    start_ship,
    write_pipeline,
)
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = END_TO_END


@dataclass
class Approved:
    """What one approved ship did, observed while it ran."""

    app: App
    data: dict[str, Any]
    pipeline: Path
    ship_id: str
    run_id: str  # the promote run that waited at the production gate
    digest: str
    output: str
    exit_code: int
    approvals_listing: str
    refused_state: dict[str, Any]
    production_before_approval: int


@pytest.fixture(scope="module")
def approved(
    stack: Stack, docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Approved]:
    root = tmp_path_factory.mktemp("approved")
    serve(stack)
    with kept_app(stack, docker_client, root) as app:
        data = pipeline_data(app)
        pipeline = write_pipeline(root / "pipeline.yaml", data)
        flow = start_ship(stack, pipeline, root / "ship.log")
        ship_id = stack.api.wait_run(pipeline)
        run_id = promote_run(stack, pipeline)
        stack.api.wait_state(run_id, ("PAUSED", *ENDED), timeout=150)
        # ship ends Completed at the handover; its CLI says how to answer.
        code = flow.wait(120)
        listing = conveyor(stack, ["approvals"], root / "approvals.log")[1]
        production_before = len(app.containers("production"))
        digest = stack.api.run(run_id)["parameters"]["digest"]
        stack.api.resume_bound(run_id, "approve", "mallory", digest, "production", "let me in")
        refused = stack.api.wait_state_key(
            run_id, f"approval-production-{digest[7:19]}-2", timeout=60
        )
        stack.api.resume_bound(run_id, "approve", "alice", digest, "production", "looks good")
        stack.api.wait_state(run_id, ENDED, timeout=180)
        yield Approved(
            app,
            data,
            pipeline,
            ship_id,
            run_id,
            digest,
            flow.output,
            code,
            listing,
            refused,
            production_before,
        )


def test_approved_release_runs_in_production_with_the_tested_digest(
    approved: Approved, stack: Stack
) -> None:
    assert approved.exit_code == 0, approved.output[-3000:]
    assert stack.api.state(approved.ship_id)["type"] == "COMPLETED"
    assert stack.api.state(approved.run_id)["type"] == "COMPLETED", stack.api.logs(approved.run_id)[
        -20:
    ]
    pushed = re.search(r"\S+@(sha256:[0-9a-f]{64})", approved.output)
    assert pushed, approved.output[-2000:]
    digest = pushed.group(1)
    assert digest == approved.digest
    app = approved.app
    integration, production = app.current("integration"), app.current("production")
    assert integration.labels["conveyor.digest"] == digest
    assert production.labels["conveyor.digest"] == digest
    # The label is what the driver wrote; the image's own digests are what the engine pulled.
    assert digest in app.image_digests(production)
    assert app.image_digests(production) == app.image_digests(integration)
    assert served_version(port_of(approved.data, "production")) == app.versions[-1]
    config = load_pipeline(approved.pipeline)
    with RegistryClient.from_config(config.registry, stack.password) as registry:
        for tag in ("integration-ready", "production-ready", app.versions[-1]):
            assert registry.resolve(app.repository, tag) == digest, tag


def test_approval_is_recorded_with_the_approver(approved: Approved, stack: Stack) -> None:
    # The promote run publishes its record while it waits too, and the final one as it
    # ends: wait for the end, then read the newest.
    final = stack.api.wait_state(approved.run_id, ("COMPLETED", "FAILED", "CRASHED"), timeout=120)
    assert final["type"] == "COMPLETED", final
    record = max(
        (
            a
            for a in stack.api.artifacts(approved.run_id)
            if a["key"] == f"release-{approved.app.name}"
        ),
        key=lambda a: a["created"],
    )
    assert "| production | approve | alice | looks good |" in record["data"]
    assert any("alice approved" in line for line in stack.api.logs(approved.run_id))


def test_an_approver_off_the_allowlist_is_refused_and_the_run_still_waits(
    approved: Approved, stack: Stack
) -> None:
    assert approved.refused_state["type"] == "PAUSED"
    logs = stack.api.logs(approved.run_id)
    assert any("refused" in line and "'mallory'" in line for line in logs)
    assert approved.production_before_approval == 0


def test_approvals_lists_the_paused_run_with_its_description(
    approved: Approved, stack: Stack
) -> None:
    name = stack.api.run(approved.run_id)["name"]
    assert name in approved.approvals_listing
    assert f"Approve `{approved.app.name}`" in approved.approvals_listing
    assert "production" in approved.approvals_listing


def test_registry_password_is_not_in_logs_artifacts_or_output(
    approved: Approved, stack: Stack
) -> None:
    secret = stack.password.get_secret_value()
    logs = stack.api.logs(approved.ship_id) + stack.api.logs(approved.run_id)
    assert len(logs) > 20, "the runs' logs were not read back"
    assert not [line for line in logs if secret in line]
    artifacts = stack.api.artifacts(approved.ship_id) + stack.api.artifacts(approved.run_id)
    assert {a["key"] for a in artifacts} >= {
        f"release-{approved.app.name}",
        f"scan-{approved.app.name}",
    }
    assert secret not in json.dumps(artifacts)
    assert secret not in approved.output


def test_a_rejection_from_the_terminal_leaves_production_on_the_previous_release(
    approved: Approved, stack: Stack, tmp_path: Path
) -> None:
    app = approved.app
    assert approved.exit_code == 0, "needs the approved release in production"
    before = app.current("production")
    v1 = app.versions[-1]
    v2 = app.commit("v2")
    data = pipeline_data(app, ports=drivers(approved.data))
    # Next to the first file: a pipeline file may build only inside its own folder tree.
    pipeline = write_pipeline(approved.pipeline.parent / "v2.yaml", data)
    flow = start_ship(stack, pipeline, tmp_path / "ship.log")
    run_id = promote_run(stack, pipeline)
    stack.api.wait_state(run_id, ("PAUSED", *ENDED), timeout=150)
    # ship hands over and ends Completed; the rejection fails the promote run.
    assert flow.wait(60) == 0, flow.output[-2000:]
    name = stack.api.run(run_id)["name"]
    digest = stack.api.run(run_id)["parameters"]["digest"]

    code, out = conveyor(stack, ["approve", name, "--as", "mallory"], tmp_path / "approve.log")
    assert code != 0 and "refused" in out, out[-2000:]
    refused = stack.api.wait_state_key(run_id, f"approval-production-{digest[7:19]}-2", timeout=60)
    assert refused["type"] == "PAUSED"

    code, out = conveyor(
        stack,
        ["reject", name, "--as", "bob", "--reason", "release notes missing"],
        tmp_path / "reject.log",
    )
    assert code == 0, out[-2000:]
    final = stack.api.wait_state(run_id, ENDED, timeout=120)
    assert final["type"] == "FAILED"
    assert "bob rejected" in final["message"] and "release notes missing" in final["message"]
    assert f"{v2}" in final["message"]
    after = app.current("production")
    assert after.id == before.id
    assert served_version(port_of(approved.data, "production")) == v1
    assert app.current("integration").labels["conveyor.version"] == v2


def test_each_run_builds_each_client_once(approved: Approved, stack: Stack) -> None:
    """The composition root builds a client once per flow run, however many tasks use it
    (issue 8 counted 25 clients for one ship before it): ship, and each execution of the
    promote run (it runs again after every answer), say what they built."""
    built = [
        line.removeprefix("connections of this run: ").removesuffix(" built")
        for run in (approved.ship_id, approved.run_id)
        for line in stack.api.logs(run)
        if line.startswith("connections of this run: ")
    ]
    assert len(built) >= 2, built
    for line in built:
        counts = {kind: int(n) for kind, n in (part.split(" ") for part in line.split(", "))}
        assert {"registry", "driver"} <= set(counts) and set(counts.values()) == {1}, line
