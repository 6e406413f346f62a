"""Production on the Marathon simulator survives the simulator's restart: the pipeline
still finds the release it runs, and rolls back to it when the next one fails."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import docker
import httpx

from tests.marathon_support import fast_template, run_sim
from tests.pipeline_support import (
    END_TO_END,
    ENDED,
    USER,
    App,
    FlowProcess,
    Stack,
    allow_auto_approve,
    check,
    pipeline_data,
    promote_run,
    write_pipeline,
)
from tests.pipeline_support import app as app  # the per-test sample app
from tests.pipeline_support import stack as stack  # the shared session fixture
from tests.pipeline_support import worker as worker  # the session's worker, autouse

pytestmark = END_TO_END


def _tasks(url: str) -> dict[str, str]:
    state = httpx.get(f"{url}/_sim/state", timeout=5).json()
    return {t["id"]: t["containerId"] for a in state["apps"].values() for t in a["tasks"]}


def _image(url: str, app_id: str) -> str:
    app = httpx.get(f"{url}/v2/apps{app_id}", timeout=5).json()["app"]
    return str(app["container"]["docker"]["image"])


def _pipeline(
    app: App, tmp_path: Path, url: str, name: str, production: list[dict[str, Any]] | None = None
) -> Path:
    data = allow_auto_approve(pipeline_data(app, production=production))
    data["environments"][1]["driver"] = {
        "kind": "marathon",
        "url": url,
        "app_id": f"/{app.name}",
        "app_template": str(fast_template(tmp_path)),
        "deploy_timeout_s": 60,
        "rollback_timeout_s": 60,
    }
    return write_pipeline(tmp_path / f"{name}.yaml", data)


def test_ship_after_a_simulator_restart_rolls_back_to_the_release_it_kept(
    stack: Stack, app: App, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    auth = base64.b64encode(f"{USER}:{stack.password.get_secret_value()}".encode()).decode()
    config = tmp_path / "docker-config.json"
    config.write_text(json.dumps({"auths": {stack.registry.address: {"auth": auth}}}))
    args = ("--state-dir", str(tmp_path / "state"), "--docker-config", str(config))
    app_id = f"/{app.name}"
    with run_sim(docker_client, *args, keep_containers=True) as first:
        v1_pipeline = _pipeline(app, tmp_path, first.url, "v1")
        ship = FlowProcess(
            stack, ["ship", "-p", str(v1_pipeline), "--auto-approve"], tmp_path / "1.log"
        )
        assert ship.wait(180) == 0, ship.output[-3000:]
        v1_image, serving = _image(first.url, app_id), _tasks(first.url)

    with run_sim(docker_client, *args, again=first) as sim:
        assert _image(sim.url, app_id) == v1_image and _tasks(sim.url) == serving
        v1 = app.versions[-1]
        v2 = app.commit("v2")
        # Production's checks accept only v1's /version: v2 deploys, fails them, goes back.
        production = [
            check("health answers", "/health", "ok"),
            check("old version", "/version", v1),
        ]
        v2_pipeline = _pipeline(app, tmp_path, sim.url, "v2", production)
        ship = FlowProcess(
            stack, ["ship", "-p", str(v2_pipeline), "--auto-approve"], tmp_path / "2.log"
        )
        assert ship.wait(180) != 0
        final = stack.api.wait_state(promote_run(stack, v2_pipeline), ENDED, timeout=30)
        assert final["type"] == "FAILED" and "RolledBack" in final["message"], final
        assert f"failed verification of {v2}" in final["message"]
        assert _image(sim.url, app_id) == v1_image
