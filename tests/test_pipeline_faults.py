"""Outside systems failing at the worst moment, on the real parts: a registry that
refuses the production test evidence right after a healthy deploy (a fault-injecting
proxy of the test's own on 127.0.0.1 in front of the real registry), and a vCenter
that is down when production's pre-flight asks it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from conveyor.clients.registry import RegistryClient
from tests.fault_proxy import Fault, FaultProxy
from tests.parts import free_port
from tests.pipeline_support import (
    PASSWORD_ENV,
    USER,
    App,
    Stack,
    Worker,
    allow_auto_approve,
    drivers,
    pipeline_data,
    promote_run,
    serve,
    start_ship,
    write_pipeline,
)
from tests.pipeline_support import app as app  # the per-test sample app
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.trivy, pytest.mark.prefect]
ENDED = ("FAILED", "CRASHED", "COMPLETED", "CANCELLED")
# The production verdict's evidence blob: {"environment": "production", ..., "summary": ...}.
PRODUCTION_VERDICT = (b'"environment": "production"', b'"summary"')


@pytest.fixture(scope="module", autouse=True)
def worker(stack: Stack) -> Worker:
    return serve(stack)  # the session's worker


def _tag(stack: Stack, repository: str, tag: str) -> str | None:
    password = SecretStr(stack.password.get_secret_value())
    with RegistryClient(stack.registry.url, USER, password) as client:
        return client.resolve(repository, tag)


def test_evidence_the_registry_refuses_after_a_healthy_deploy_errors_without_rollback(
    stack: Stack, app: App, tmp_path: Path
) -> None:
    first = allow_auto_approve(pipeline_data(app))
    flow = start_ship(
        stack, write_pipeline(tmp_path / "v1.yaml", first), tmp_path / "v1.log", "--auto-approve"
    )
    assert flow.wait(180) == 0, flow.output[-3000:]
    v1_digest = app.current("production").labels["conveyor.digest"]

    v2 = app.commit("v2")
    with FaultProxy(("127.0.0.1", stack.registry.port)) as proxy:
        refuse = proxy.add(Fault("PUT", "/blobs/uploads/", body_contains=PRODUCTION_VERDICT))
        second = allow_auto_approve(pipeline_data(app, ports=drivers(first)))
        second["registry"]["url"] = proxy.url
        pipeline = write_pipeline(tmp_path / "v2.yaml", second)
        flow = start_ship(stack, pipeline, tmp_path / "v2.log", "--auto-approve")
        assert flow.wait(240) != 0
        run_id = promote_run(stack, pipeline)
        final = stack.api.wait_state(run_id, ENDED, timeout=30)
        # The upload was retried (the step's retries), then the run ended as an error.
        assert refuse.hits >= 2, proxy.seen[-10:]
        assert final["type"] == "FAILED", final
        assert "RolledBack" not in final["message"] and "503" in final["message"], final
        production = app.current("production")
        assert production.labels["conveyor.version"] == v2
        v2_digest = production.labels["conveyor.digest"]
        assert v2_digest != v1_digest
        assert _tag(stack, app.repository, "production-ready") == v2_digest
        assert not [line for line in stack.api.logs(run_id) if "rolled back" in line]

        # The registry is back: the next run finds production deployed, checks it again
        # and records the evidence; nothing is deployed twice.
        proxy.clear()
        container = production.id
        flow = start_ship(stack, pipeline, tmp_path / "v2-again.log", "--auto-approve")
        assert flow.wait(180) == 0, flow.output[-3000:]
        assert app.current("production").id == container
        assert any(kind == "pass" and method == "PUT" for method, _, kind in proxy.seen)


def test_a_vcenter_that_is_down_leaves_the_production_tag_on_what_production_runs(
    stack: Stack, app: App, tmp_path: Path
) -> None:
    first = allow_auto_approve(pipeline_data(app))
    flow = start_ship(
        stack, write_pipeline(tmp_path / "v1.yaml", first), tmp_path / "v1.log", "--auto-approve"
    )
    assert flow.wait(180) == 0, flow.output[-3000:]
    v1_digest = app.current("production").labels["conveyor.digest"]
    assert _tag(stack, app.repository, "production-ready") == v1_digest

    app.commit("v2")
    second = allow_auto_approve(pipeline_data(app, ports=drivers(first)))
    # vCenter is down: nothing listens on its port.
    second["environments"][1]["preflight"] = {
        "vsphere": {
            "url": f"https://127.0.0.1:{free_port()}/sdk",
            "username": "administrator@vsphere.local",
            "password": {"env": PASSWORD_ENV},
            "cluster": "dcos-production",
            "request_timeout_s": 2,
        }
    }
    pipeline = write_pipeline(tmp_path / "v2.yaml", second)
    flow = start_ship(stack, pipeline, tmp_path / "v2.log", "--auto-approve")
    assert flow.wait(240) != 0
    run_id = promote_run(stack, pipeline)
    final = stack.api.wait_state(run_id, ENDED, timeout=30)
    assert final["type"] == "FAILED", final
    assert app.current("production").labels["conveyor.digest"] == v1_digest
    assert _tag(stack, app.repository, "production-ready") == v1_digest
