"""A release of three services shipped through the real flows on a worker: built side by
side, recorded as one release artifact, tested with every member's URL in integration,
approved once and promoted into production as one Marathon group (the simulator)."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import docker
import httpx

from conveyor.clients.registry import RegistryClient
from conveyor.evidence import read_evidence
from conveyor.release_set import read_release
from tests.marathon_support import fast_template, run_sim
from tests.pipeline_support import (
    END_TO_END,
    ENDED,
    HELLO,
    PASSWORD_ENV,
    USER,
    FlowProcess,
    Stack,
    _git,
    allow_auto_approve,
    check,
    conveyor,
    environment,
    promote_run,
    write_pipeline,
)
from tests.pipeline_support import stack as stack  # the shared session fixture
from tests.pipeline_support import worker as worker  # the session's worker, autouse

pytestmark = END_TO_END
SERVICES = {"worker": [], "api": ["worker"], "front": ["api"]}
# The integration test command reaches every member through its CONVEYOR_URL_<SERVICE>.
REACH_ALL = (
    "import os, urllib.request\n"
    "for s in ('FRONT', 'API', 'WORKER'):\n"
    "    urllib.request.urlopen(os.environ['CONVEYOR_URL_' + s] + '/health', timeout=5).read()\n"
)


def _sources(root: Path) -> dict[str, Path]:
    """Three copies of examples/hello, each with a page of its own, in one git repository."""
    contexts = {}
    for name in SERVICES:
        contexts[name] = root / name
        shutil.copytree(HELLO, contexts[name], symlinks=True)
        (contexts[name] / "www" / "index.html").write_text(f"<p>{name}</p>\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "three services")
    return contexts


def _marathon(url: str, group: str, template: Path) -> dict[str, Any]:
    return {
        "kind": "marathon",
        "url": url,
        "app_id": group,
        "app_template": str(template),
        "deploy_timeout_s": 90,
        "rollback_timeout_s": 60,
    }


def _pipeline(stack: Stack, tmp_path: Path, name: str, sim_url: str) -> Path:
    contexts = _sources(tmp_path / "src")
    template = fast_template(tmp_path, instances=1)
    health = check("health answers", "/health", "ok")
    integration = environment("integration", "integration-ready", [health])
    integration["tests"]["command"] = [sys.executable, "-c", REACH_ALL]
    integration["driver"] = _marathon(sim_url, f"/{name}-int", template)
    production = environment("production", "production-ready", [health], "10m")
    production["driver"] = _marathon(sim_url, f"/{name}-prod", template)
    data = {
        "name": name,
        "services": [
            {"name": s, "context": str(contexts[s]), "depends_on": deps}
            for s, deps in SERVICES.items()
        ],
        "registry": {
            "url": stack.registry.url,
            "repository": f"conveyor/{name}",
            "username": USER,
            "password": {"env": PASSWORD_ENV},
        },
        # Secrets only: three misconfig scans (each compiling trivy's checks) would double
        # the build stage, and the scan gate of one image is tested elsewhere.
        "scan": {"scanners": ["secret"], "blocking": ["CRITICAL", "HIGH"]},
        "environments": [integration, production],
    }
    return write_pipeline(tmp_path / f"{name}.yaml", allow_auto_approve(data))


def test_three_services_ship_as_one_release_into_one_marathon_group(
    stack: Stack, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    auth = base64.b64encode(f"{USER}:{stack.password.get_secret_value()}".encode()).decode()
    config = tmp_path / "docker-config.json"
    config.write_text(json.dumps({"auths": {stack.registry.address: {"auth": auth}}}))
    name = f"shop-{secrets.token_hex(3)}"
    registry = RegistryClient(stack.registry.url, USER, stack.password)
    with run_sim(docker_client, "--docker-config", str(config)) as sim:
        pipeline = _pipeline(stack, tmp_path, name, sim.url)
        ship = FlowProcess(
            stack, ["ship", "-p", str(pipeline), "--auto-approve"], tmp_path / "s.log"
        )
        assert ship.wait(300) == 0, ship.output[-3000:]
        promote = stack.api.wait_state(promote_run(stack, pipeline), ENDED, timeout=30)
        assert promote["type"] == "COMPLETED", promote

        # The release artifact lists the three images, and production's tag names it.
        repo = f"conveyor/{name}"
        release_digest = registry.resolve(repo, "production-ready")
        assert release_digest is not None
        members = read_release(registry, repo, release_digest)
        assert sorted(members) == sorted(SERVICES)
        # What ship handed over to the promote run is the release artifact's digest.
        (run,) = stack.api.runs_of(pipeline, "promote")
        assert run["parameters"]["digest"] == release_digest

        # Production runs all three at those digests, as one group, each member healthy.
        group = httpx.get(
            f"{sim.url}/v2/groups/{name}-prod", params={"embed": "group.apps.tasks"}, timeout=10
        ).json()
        apps = {a["id"].rsplit("/", 1)[-1]: a for a in group["apps"]}
        # The group's record app names the release it runs.
        record = apps.pop("conveyor-release")
        assert record["labels"]["dev.conveyor.release.digest"] == release_digest
        images = {s: a["container"]["docker"]["image"] for s, a in apps.items()}
        address = stack.registry.address
        assert images == {s: f"{address}/{repo}/{s}@{d}" for s, d in members.items()}
        for a in apps.values():
            alive = [r["alive"] for t in a["tasks"] for r in t["healthCheckResults"]]
            assert len(a["tasks"]) == a["instances"] and alive and all(alive), a
        deps = {s: a["dependencies"] for s, a in apps.items()}
        assert deps["front"] == [f"/{name}-prod/api"] and deps["worker"] == []

        for service, digest in members.items():
            # Every member carries the tag, and the evidence of the tests it passed.
            assert registry.resolve(f"{repo}/{service}", "production-ready") == digest
            tested = read_evidence(registry, f"{repo}/{service}", digest, ("integration",))
            assert tested and tested[-1].passed, service
        approvals = read_evidence(registry, repo, release_digest, ("approval",))
        assert [a.fields.get("environment") for a in approvals] == ["production"]
        verified = read_evidence(registry, repo, release_digest, ("verification",))
        assert verified and verified[-1].passed
        args = ["verify", release_digest, "-p", str(pipeline), "--env", "production"]
        code, out = conveyor(stack, args, tmp_path / "verify.log", timeout=60)
        assert code == 0 and "verifies" in out, out

        # Each service was built in a task run of its own, its build log there.
        (ship_run,) = stack.api.runs_of(pipeline, "ship")
        names = [t["name"] for t in stack.api.task_runs(ship_run["id"])]
        assert {f"build {s}" for s in SERVICES} <= set(names), names
