"""Outside systems failing at the worst moment, on the real parts: a registry that
refuses the production test evidence right after a healthy deploy (a fault-injecting
proxy of the test's own on 127.0.0.1 in front of the real registry), and a vCenter
that is down when production's pre-flight asks it.

Both start from one app whose first release is in production (one ship fewer): each
judges production against what it ran before its own ship. The vCenter test goes
first: it must leave production and its tag as they were, which the registry test
then starts from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from conveyor.clients.registry import RegistryClient
from tests.fault_proxy import Fault, FaultProxy
from tests.parts import free_port
from tests.pipeline_support import (
    END_TO_END,
    ENDED,
    PASSWORD_ENV,
    USER,
    App,
    Released,
    Stack,
    allow_auto_approve,
    drivers,
    pipeline_data,
    promote_run,
    released_fixture,
    start_ship,
    write_pipeline,
)
from tests.pipeline_support import stack as stack  # the shared session fixture
from tests.pipeline_support import worker as worker  # the session's worker, autouse

pytestmark = END_TO_END
# The production verdict's evidence blob: {"environment": "production", ..., "summary": ...}.
PRODUCTION_VERDICT = (b'"environment": "production"', b'"summary"')


def _tag(stack: Stack, repository: str, tag: str) -> str | None:
    password = SecretStr(stack.password.get_secret_value())
    with RegistryClient(stack.registry.url, USER, password) as client:
        return client.resolve(repository, tag)


def _first_auto_approved(stack: Stack, app: App, root: Path) -> dict[str, Any]:
    """The first release, auto-approved all the way to production; its pipeline data."""
    first = allow_auto_approve(pipeline_data(app))
    flow = start_ship(
        stack, write_pipeline(root / "v1.yaml", first), root / "v1.log", "--auto-approve"
    )
    assert flow.wait(180) == 0, flow.output[-3000:]
    return first


released = released_fixture(_first_auto_approved)


def test_a_vcenter_that_is_down_leaves_the_production_tag_on_what_production_runs(
    stack: Stack, released: Released
) -> None:
    app, root = released.app, released.root
    running = app.current("production").labels["conveyor.digest"]
    assert _tag(stack, app.repository, "production-ready") == running

    app.commit("vcenter-down")
    second = allow_auto_approve(pipeline_data(app, ports=drivers(released.first)))
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
    pipeline = write_pipeline(root / "vcenter-down.yaml", second)
    flow = start_ship(stack, pipeline, root / "vcenter-down.log", "--auto-approve")
    assert flow.wait(240) != 0
    run_id = promote_run(stack, pipeline)
    final = stack.api.wait_state(run_id, ENDED, timeout=30)
    assert final["type"] == "FAILED", final
    assert app.current("production").labels["conveyor.digest"] == running
    assert _tag(stack, app.repository, "production-ready") == running


def test_evidence_the_registry_refuses_after_a_healthy_deploy_errors_without_rollback(
    stack: Stack, released: Released
) -> None:
    app, root = released.app, released.root
    before_digest = app.current("production").labels["conveyor.digest"]

    v2 = app.commit("evidence-refused")
    with FaultProxy(("127.0.0.1", stack.registry.port)) as proxy:
        refuse = proxy.add(Fault("PUT", "/blobs/uploads/", body_contains=PRODUCTION_VERDICT))
        second = allow_auto_approve(pipeline_data(app, ports=drivers(released.first)))
        second["registry"]["url"] = proxy.url
        # Next to the first file: a pipeline file may build only inside its own folder tree.
        pipeline = write_pipeline(root / "evidence.yaml", second)
        flow = start_ship(stack, pipeline, root / "evidence.log", "--auto-approve")
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
        assert v2_digest != before_digest
        assert _tag(stack, app.repository, "production-ready") == v2_digest
        assert not [line for line in stack.api.logs(run_id) if "rolled back" in line]

        # The registry is back: the next run finds production deployed, checks it again
        # and records the evidence; nothing is deployed twice.
        proxy.clear()
        container = production.id
        flow = start_ship(stack, pipeline, root / "evidence-again.log", "--auto-approve")
        assert flow.wait(180) == 0, flow.output[-3000:]
        assert app.current("production").id == container
        assert any(kind == "pass" and method == "PUT" for method, _, kind in proxy.seen)
