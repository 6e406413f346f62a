"""The three-service sample (examples/shop, deployments/shop.yaml) shipped through the real
flows on a worker, into one Marathon group per environment (the simulator): built side
by side, recorded as one release artifact, tested with every member's URL in
integration, approved once and promoted into production as one group. Then a change to
one service's source rebuilds only it and changes only its app in production; then a
release whose one member fails its health check in production leaves the whole group
on the release before.

One simulator and one pipeline file serve the three steps, each step shipping on what
the one before left (the module's fixtures, in order).
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from conveyor.clients.registry import RegistryClient
from conveyor.config import load_pipeline
from conveyor.connections import Connections
from conveyor.drivers.base import DeployedState
from conveyor.evidence import read_evidence
from conveyor.release_set import read_release
from tests.marathon_support import Sim, run_sim
from tests.pipeline_support import (
    END_TO_END,
    ENDED,
    PASSWORD_ENV,
    REPO,
    USER,
    FlowProcess,
    Stack,
    _git,
    allow_auto_approve,
    conveyor,
    write_pipeline,
)
from tests.pipeline_support import stack as stack  # the shared session fixture
from tests.pipeline_support import worker as worker  # the session's worker, autouse

pytestmark = END_TO_END
SHOP = REPO / "examples" / "shop"
SHOP_FILE = REPO / "deployments" / "shop.yaml"
SERVICES = ("worker", "api", "front")
# Each caller's template names its callee's fixed port as CONVEYOR_URL_<CALLEE>.
CALLS = {"api": "worker", "front": "api"}
# The integration test command reaches every member through its CONVEYOR_URL_<SERVICE>,
# and the worker through the front's page.
REACH_ALL = (
    "import os, urllib.request\n"
    "def get(s, path):\n"
    "    return urllib.request.urlopen(os.environ['CONVEYOR_URL_' + s] + path, timeout=10).read()\n"
    "for s in ('FRONT', 'API', 'WORKER'):\n"
    "    get(s, '/health')\n"
    "assert b'did the work' in get('FRONT', '/'), get('FRONT', '/')\n"
)


def _templates(root: Path, sim: Sim) -> dict[str, dict[str, Path]]:
    """Environment → service → the sample's app template with quick health checks, the
    fixed ports (and the URLs that name them) moved into the simulator's port range: the
    sample's own belong to the clusters of ``conveyor up``."""
    # The top of the range: dynamic ports (the front's) are handed out from the bottom.
    fixed = iter(range(sim.low + 190, sim.low + 200))
    out: dict[str, dict[str, Path]] = {}
    for env in ("integration", "production"):
        apps = {
            s: json.loads((SHOP_FILE.parent / f"marathon/shop/{s}-{env}.json").read_text())
            for s in SERVICES
        }
        ports = {s: next(fixed) for s in CALLS.values()}
        for s, app in apps.items():
            app["healthChecks"][0].update(intervalSeconds=1, timeoutSeconds=1)
            if s in ports:
                app["portDefinitions"][0]["port"] = ports[s]
            if s in CALLS:
                callee = CALLS[s]
                app["env"] = {f"CONVEYOR_URL_{callee.upper()}": f"http://127.0.0.1:{ports[callee]}"}
            path = root / f"{s}-{env}.json"
            path.write_text(json.dumps(app))
            out.setdefault(env, {})[s] = path
    return out


def _driver(url: str, group: str, template: Path) -> dict[str, Any]:
    return {
        "kind": "marathon",
        "url": url,
        "app_id": group,
        "app_template": str(template),
        "deploy_timeout_s": 90,
        "rollback_timeout_s": 60,
    }


def _pipeline_data(
    stack: Stack, name: str, source: Path, sim: Sim, templates: dict[str, dict[str, Path]]
) -> dict[str, Any]:
    """deployments/shop.yaml on this test's parts: the copy of the sample, our registry,
    one simulator (a group per environment) without DC/OS auth or vCenter."""
    data = yaml.safe_load(SHOP_FILE.read_text())
    data["name"] = name
    for s in data["services"]:
        s["context"] = str(source / s["name"])
        s["environments"] = {
            env: {"app_template": str(paths[s["name"]])} for env, paths in templates.items()
        }
    data["registry"] = {
        "url": stack.registry.url,
        "repository": f"conveyor/{name}",
        "username": USER,
        "password": {"env": PASSWORD_ENV},
    }
    # Secrets only: three misconfig scans (each compiling trivy's checks) would double
    # the build stage, and the scan gate of one image is tested elsewhere.
    data["scan"] = {"scanners": ["secret"], "blocking": ["CRITICAL", "HIGH"]}
    for env in data["environments"]:
        env["driver"] = _driver(
            sim.url, f"/{name}-{env['name'][:4]}", templates[env["name"]]["front"]
        )
        env.pop("preflight", None)
        env["health"]["interval_s"] = 0.5
    integration = data["environments"][0]
    integration["tests"]["command"] = [sys.executable, "-c", REACH_ALL]
    return allow_auto_approve(data)


@dataclass(frozen=True)
class Shipped:
    code: int  # conveyor ship's exit code
    output: str
    ship_run: str
    promoted: dict[str, Any]  # the promote run's final state


@dataclass
class Shop:
    """The sample under a unique name in a git repository of its own, and its pipeline."""

    stack: Stack
    sim: Sim
    name: str
    source: Path
    pipeline: Path
    data: dict[str, Any]
    templates: dict[str, dict[str, Path]]
    root: Path
    registry: RegistryClient
    releases: list[str] = field(default_factory=list)  # release artifacts, oldest first

    @property
    def repo(self) -> str:
        return f"conveyor/{self.name}"

    def commit(self, service: str, text: str) -> None:
        """A change to one service's source: a file of its context."""
        (self.source / service / "www" / "note.txt").write_text(text + "\n")
        _git(self.source, "add", "-A")
        _git(self.source, "commit", "-q", "-m", text)

    def ship(self) -> Shipped:
        """``conveyor ship --auto-approve`` to its end (it follows the promote run it
        hands the release to); the release it shipped is appended to ``releases``."""
        step = len(self.releases) + 1
        log = self.root / f"ship-{step}.log"
        ship = FlowProcess(self.stack, ["ship", "-p", str(self.pipeline), "--auto-approve"], log)
        code = ship.wait(300)
        handed = self.stack.api.runs_of(self.pipeline, "promote")
        assert len(handed) == step, f"no promote run for ship {step}:\n{ship.output[-3000:]}"
        promote = handed[-1]["id"]
        state = self.stack.api.wait_state(promote, ENDED, timeout=30)
        ship_run = self.stack.api.runs_of(self.pipeline, "ship")[-1]
        self.releases.append(self.stack.api.run(promote)["parameters"]["digest"])
        return Shipped(code, ship.output, ship_run["id"], state)

    def group(self, env: str) -> dict[str, dict[str, Any]]:
        """Member (and record app) → its app with tasks, as Marathon holds the group."""
        group = httpx.get(
            f"{self.sim.url}/v2/groups/{self.name}-{env[:4]}",
            params={"embed": "group.apps.tasks"},
            timeout=10,
        ).json()
        return {a["id"].rsplit("/", 1)[-1]: a for a in group["apps"]}

    def images(self, env: str) -> dict[str, str]:
        apps = self.group(env)
        return {s: apps[s]["container"]["docker"]["image"] for s in SERVICES}

    def state(self, env: str) -> DeployedState:
        """What the environment's driver reads back (as ``conveyor gc`` does)."""
        config = load_pipeline(self.pipeline)
        with Connections(config, resolve_secret=lambda _ref: self.stack.password) as opened:
            return opened.driver(config.environment(env)).status()

    def image_refs(self, members: dict[str, str]) -> dict[str, str]:
        address = self.stack.registry.address
        return {s: f"{address}/{self.repo}/{s}@{d}" for s, d in members.items()}


@pytest.fixture(scope="module")
def shop(
    stack: Stack,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shop]:
    """The first release of the sample shipped through integration into production."""
    root = tmp_path_factory.mktemp("shop")
    auth = base64.b64encode(f"{USER}:{stack.password.get_secret_value()}".encode()).decode()
    config = root / "docker-config.json"
    config.write_text(json.dumps({"auths": {stack.registry.address: {"auth": auth}}}))
    name = f"shop-{secrets.token_hex(3)}"
    source = root / "src"
    # symlinks=True keeps busybox and http-get links, as in the repository; the build
    # dereferences them.
    shutil.copytree(SHOP, source, symlinks=True)
    _git(source, "init", "-q")
    _git(source, "add", "-A")
    _git(source, "commit", "-q", "-m", "the shop")
    with run_sim(docker_client, "--docker-config", str(config)) as sim:
        templates = _templates(root, sim)
        data = _pipeline_data(stack, name, source, sim, templates)
        pipeline = write_pipeline(root / f"{name}.yaml", data)
        registry = RegistryClient(stack.registry.url, USER, stack.password)
        made = Shop(stack, sim, name, source, pipeline, data, templates, root, registry)
        first = made.ship()
        assert first.code == 0 and first.promoted["type"] == "COMPLETED", first.output[-3000:]
        yield made


def test_three_services_ship_as_one_release_into_one_marathon_group(
    shop: Shop, stack: Stack, tmp_path: Path
) -> None:
    # The release artifact lists the three images, and production's tag names it.
    repo, registry = shop.repo, shop.registry
    release_digest = registry.resolve(repo, "production-ready")
    assert release_digest is not None
    members = read_release(registry, repo, release_digest)
    assert sorted(members) == sorted(SERVICES)
    # What ship handed over to the promote run is the release artifact's digest.
    assert shop.releases == [release_digest]

    # Production runs all three at those digests, as one group, each member healthy.
    apps = shop.group("production")
    # The group's record app names the release it runs.
    record = apps.pop("conveyor-release")
    assert record["labels"]["dev.conveyor.release.digest"] == release_digest
    assert shop.images("production") == shop.image_refs(members)
    for a in apps.values():
        alive = [r["alive"] for t in a["tasks"] for r in t["healthCheckResults"]]
        assert len(a["tasks"]) == a["instances"] and alive and all(alive), a
    deps = {s: a["dependencies"] for s, a in apps.items()}
    assert deps["front"] == [f"/{shop.name}-prod/api"] and deps["worker"] == []

    for service, digest in members.items():
        # Every member carries the tag, and the evidence of the tests it passed.
        assert registry.resolve(f"{repo}/{service}", "production-ready") == digest
        tested = read_evidence(registry, f"{repo}/{service}", digest, ("integration",))
        assert tested and tested[-1].passed, service
    approvals = read_evidence(registry, repo, release_digest, ("approval",))
    assert [a.fields.get("environment") for a in approvals] == ["production"]
    verified = read_evidence(registry, repo, release_digest, ("verification",))
    assert verified and verified[-1].passed
    args = ["verify", release_digest, "-p", str(shop.pipeline), "--env", "production"]
    code, out = conveyor(stack, args, tmp_path / "verify.log", timeout=60)
    assert code == 0 and "verifies" in out, out

    # Each service was built in a task run of its own, its build log there.
    (ship_run,) = stack.api.runs_of(shop.pipeline, "ship")
    names = [t["name"] for t in stack.api.task_runs(ship_run["id"])]
    assert {f"build {s}" for s in SERVICES} <= set(names), names


def _unchanged(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether Marathon left a member app alone: its version and its tasks."""
    tasks = [{t["id"] for t in a["tasks"]} for a in (before, after)]
    return bool(before["version"] == after["version"] and tasks[0] == tasks[1])


@pytest.fixture(scope="module")
def second(shop: Shop) -> tuple[Shipped, dict[str, dict[str, Any]]]:
    """The second release: only the API's source changed. Also production's group as
    the first release left it."""
    before = shop.group("production")
    shop.commit("api", "the api, second release")
    shipped = shop.ship()
    assert shipped.code == 0 and shipped.promoted["type"] == "COMPLETED", shipped.output[-3000:]
    return shipped, before


def test_a_changed_service_alone_is_rebuilt_and_changes_in_production(
    shop: Shop, second: tuple[Shipped, dict[str, dict[str, Any]]]
) -> None:
    shipped, before = second
    first, release = shop.releases[0], shop.releases[1]
    was = read_release(shop.registry, shop.repo, first)
    now = read_release(shop.registry, shop.repo, release)
    # The release artifact carries the two unchanged digests, and lists the API's new one.
    assert now["api"] != was["api"]
    assert {s: now[s] for s in ("worker", "front")} == {s: was[s] for s in ("worker", "front")}

    # Each service still has its build task run; only the API's built and pushed.
    names = [t["name"] for t in shop.stack.api.task_runs(shipped.ship_run)]
    assert {f"build {s}" for s in SERVICES} <= set(names), names
    logs = shop.stack.api.logs(shipped.ship_run)
    for s in ("worker", "front"):
        assert any(line.startswith(f"{s} unchanged since") for line in logs), (s, logs)
        assert not any(line.startswith(f"{s} pushed at") for line in logs), (s, logs)
    assert f"api pushed at {now['api']}" in logs, logs
    assert not any(line.startswith("api unchanged since") for line in logs), logs

    # Production runs the new release, and Marathon changed the API's app only.
    after = shop.group("production")
    assert after["conveyor-release"]["labels"]["dev.conveyor.release.digest"] == release
    assert shop.images("production") == shop.image_refs(now)
    assert shop.registry.resolve(shop.repo, "production-ready") == release
    assert [s for s in SERVICES if not _unchanged(before[s], after[s])] == ["api"]
    # What a rollback would restore, and gc keeps: the first release.
    assert shop.state("production").previous_digest == first


def test_a_member_failing_in_production_returns_the_whole_group(
    shop: Shop, second: tuple[Shipped, dict[str, dict[str, Any]]]
) -> None:
    """The third release changes the worker's source, and production's API template asks
    for a health path the API does not serve (a production-only change): the API never
    turns healthy, and the whole group, the changed worker too, is put back on the second
    release, its tags with it."""
    template = shop.templates["production"]["api"]
    app = json.loads(template.read_text())
    app["healthChecks"][0]["path"] = "/ready"
    template.write_text(json.dumps(app))
    production = shop.data["environments"][1]
    # The API never turns healthy: the deploy waits this long before putting the group back.
    production["driver"]["deploy_timeout_s"] = 30
    write_pipeline(shop.pipeline, shop.data)
    second_release = shop.releases[1]
    second_members = read_release(shop.registry, shop.repo, second_release)
    shop.commit("worker", "the worker, third release")

    shipped = shop.ship()
    third = read_release(shop.registry, shop.repo, shop.releases[2])
    assert third["worker"] != second_members["worker"]
    # Failed, not Crashed: the run ended on the release's failure, and says which member.
    assert shipped.promoted["type"] == "FAILED", shipped.promoted
    assert "member 'api'" in shipped.promoted["message"], shipped.promoted["message"]
    assert shipped.code != 0 and "member 'api'" in shipped.output, shipped.output[-3000:]

    # Production's group runs the second release again, every member (the worker too).
    apps = shop.group("production")
    assert apps["conveyor-release"]["labels"]["dev.conveyor.release.digest"] == second_release
    assert shop.images("production") == shop.image_refs(second_members)
    assert apps["api"]["healthChecks"][0]["path"] == "/health"
    # What a rollback would restore (and gc keeps) is still the first release, not the
    # third, which never ran.
    state = shop.state("production")
    assert state.healthy and state.digest == shop.releases[1], state
    assert state.previous_digest == shop.releases[0], state
    assert f"it runs {state.version} again" in shipped.promoted["message"], shipped.promoted
    # The environment's tags name what it runs again, on the artifact and every member.
    assert shop.registry.resolve(shop.repo, "production-ready") == second_release
    for s, digest in second_members.items():
        assert shop.registry.resolve(f"{shop.repo}/{s}", "production-ready") == digest, s
