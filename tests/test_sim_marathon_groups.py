"""The simulator's ids, groups, restarts and kills as Marathon serves them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from conveyor.sim.marathon import MarathonSim, Settings, pathid
from tests import test_sim_marathon as base
from tests.test_sim_marathon import app_def, wait_for

pytestmark = pytest.mark.docker

make_sim = base.make_sim
sim_image = base.sim_image
sim = base.sim


@pytest.fixture
def api(sim: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        yield client


# --- the same rules through the API ----------------------------------------------------------


def _deployed(api: httpx.Client, app_id: str, instances: int) -> bool:
    app = api.get(f"/v2/apps{app_id}").json()["app"]
    return not app["deployments"] and app["tasksHealthy"] == instances == len(app["tasks"])


def _idle(api: httpx.Client) -> bool:
    return api.get("/v2/deployments").json() == []


def test_ids_resolve_in_every_route(api: httpx.Client) -> None:
    created = api.post("/v2/apps", json={**app_def(), "id": "team//web/"})
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "/team/web"
    for path in ("/v2/apps/team/web", "/v2/apps//team/web", "/v2/apps/team//web/"):
        shown = api.get(path)
        assert shown.status_code == 200 and shown.json()["app"]["id"] == "/team/web"
    wait_for("web deployed", lambda: _deployed(api, "/team/web", 1))
    app = api.get("/v2/apps/team/web").json()["app"]
    # Marathon 1.x embeds counts, tasks, deployments (and lastTaskFailure) always.
    assert {"tasksRunning", "tasksHealthy", "tasks", "deployments"} <= set(app)
    assert api.get("/v2/apps/team/web/versions").json()["versions"] == [app["version"]]
    assert api.get(f"/v2/apps//team/web/versions/{app['version']}").status_code == 200
    assert len(api.get("/v2/apps/team/web/tasks").json()["tasks"]) == 1
    assert [a["id"] for a in api.get("/v2/apps/team/*").json()["*"]] == ["/team/web"]
    assert api.get("/v2/apps/nobody/*").status_code == 404
    bad = api.put("/v2/apps/team/We_b", json=app_def())
    assert bad.status_code == 422
    assert bad.json()["details"] == [{"path": "/id", "errors": [pathid.INVALID_CHARS]}]
    reserved = api.post("/v2/apps", json={**app_def(), "id": "/team/versions"})
    assert reserved.status_code == 422
    assert reserved.json()["details"][0]["errors"] == [pathid.RESERVED_END]
    assert api.patch("/v2/apps/team/nope", json={"instances": 2}).status_code == 404


def test_group_with_dependency_starts_in_order_and_reverts(sim: Any, api: httpx.Client) -> None:
    events = base.EventReader(sim.url)
    group: dict[str, Any] = {
        "id": "/shop",
        "apps": [
            {**app_def(), "id": "db"},
            {**app_def(), "id": "web", "dependencies": ["db"]},
        ],
    }
    created = api.post("/v2/groups", json=group)
    assert created.status_code == 201, created.text
    dep = next(
        d for d in api.get("/v2/deployments").json() if d["id"] == created.json()["deploymentId"]
    )
    order = [[a["app"] for a in step["actions"]] for step in dep["steps"]]
    assert order == [["/shop/db", "/shop/web"], ["/shop/db"], ["/shop/web"]]
    # web waits for db: while db's step runs, web has no task.
    assert api.get("/v2/apps/shop/web").json()["app"]["tasks"] == []
    wait_for("shop deployed", lambda: _idle(api))
    changes = events.named("group_change_success")
    # Marathon names the group above the one changed (GroupsResource: rootPath.parent).
    assert changes[0]["groupId"] == "/" and changes[0]["version"] == created.json()["version"]
    first = api.get("/v2/groups/shop").json()
    assert [a["id"] for a in first["apps"]] == ["/shop/db", "/shop/web"]
    assert first["apps"][1]["dependencies"] == ["/shop/db"]
    db_task = api.get("/v2/apps/shop/db").json()["app"]["tasks"][0]
    web_task = api.get("/v2/apps/shop/web").json()["app"]["tasks"][0]
    assert db_task["startedAt"] <= web_task["stagedAt"]

    updated = api.put(
        "/v2/groups/shop",
        json={"apps": [group["apps"][0], {**group["apps"][1], "env": {"RELEASE": "2"}}]},
    )
    assert updated.status_code == 200, updated.text
    wait_for("update deployed", lambda: _idle(api))
    assert api.get("/v2/apps/shop/web").json()["app"]["env"] == {"RELEASE": "2"}
    versions = api.get("/v2/groups/shop/versions").json()
    assert versions[0] == updated.json()["version"] and first["version"] in versions
    old = api.get(f"/v2/groups/shop/versions/{first['version']}").json()
    assert old["apps"][1]["env"] == {}

    back = api.put("/v2/groups/shop", json={"version": first["version"]})
    assert back.status_code == 200, back.text
    wait_for("revert deployed", lambda: _idle(api) and _deployed(api, "/shop/web", 1))
    assert api.get("/v2/apps/shop/web").json()["app"]["env"] == {}

    scaled = api.put("/v2/groups/shop", json={"scaleBy": 2})
    assert scaled.status_code == 200
    wait_for("scaled", lambda: _idle(api) and _deployed(api, "/shop/db", 2))

    removed = api.delete("/v2/groups/shop")
    assert removed.status_code == 200
    wait_for("group removed", lambda: _idle(api) and not api.get("/v2/apps").json()["apps"])
    assert api.get("/v2/groups/shop").status_code == 404


def test_group_validation(api: httpx.Client) -> None:
    cycle = {
        "id": "/loop",
        "apps": [
            {**app_def(), "id": "a", "dependencies": ["b"]},
            {**app_def(), "id": "b", "dependencies": ["a"]},
        ],
    }
    answer = api.post("/v2/groups", json=cycle)
    assert answer.status_code == 422
    assert answer.json()["details"][0]["errors"] == ["Dependency graph has cyclic dependencies."]
    stray = api.post("/v2/groups", json={"id": "/g", "apps": [{**app_def(), "id": "/other/a"}]})
    assert stray.status_code == 422
    assert stray.json()["details"][0]["path"] == "/apps(0)/id"
    nested = api.put("/v2/groups/outer", json={"groups": [{"id": "inner", "dependencies": []}]})
    assert nested.status_code == 200
    root = api.get("/v2/groups").json()
    assert [g["id"] for g in root["groups"]] == ["/outer"]
    assert [g["id"] for g in root["groups"][0]["groups"]] == ["/outer/inner"]
    assert api.post("/v2/groups", json={"id": "/outer"}).status_code == 409
    assert api.get("/v2/groups/nope").status_code == 404


def test_restart_and_kills(api: httpx.Client) -> None:
    assert api.put("/v2/apps/k", json=app_def(instances=2)).status_code == 201
    wait_for("k deployed", lambda: _deployed(api, "/k", 2))
    before = {t["id"] for t in api.get("/v2/apps/k/tasks").json()["tasks"]}

    restart = api.post("/v2/apps/k/restart")
    assert restart.status_code == 200 and "deploymentId" in restart.json()
    wait_for("k restarted", lambda: _idle(api) and _deployed(api, "/k", 2))
    restarted = {t["id"] for t in api.get("/v2/apps/k/tasks").json()["tasks"]}
    assert not restarted & before

    victim = sorted(restarted)[0]
    killed = api.delete(f"/v2/apps/k/tasks/{victim}")
    assert killed.status_code == 200 and killed.json()["task"]["id"] == victim

    def replaced() -> bool:
        ids = {t["id"] for t in api.get("/v2/apps/k/tasks").json()["tasks"]}
        return victim not in ids and _deployed(api, "/k", 2)

    wait_for("killed task replaced", replaced)
    assert api.delete("/v2/apps/k/tasks/k.instance-nope._app.1").status_code == 404

    one = api.get("/v2/apps/k/tasks").json()["tasks"][0]["id"]
    shrunk = api.post("/v2/tasks/delete?scale=true", json={"ids": [one]})
    assert shrunk.status_code == 200 and "deploymentId" in shrunk.json()
    wait_for("scaled to 1", lambda: _idle(api) and _deployed(api, "/k", 1))

    all_killed = api.delete("/v2/apps/k/tasks", params={"scale": "true"})
    assert all_killed.status_code == 200 and "deploymentId" in all_killed.json()
    wait_for(
        "scaled to 0", lambda: _idle(api) and api.get("/v2/apps/k").json()["app"]["instances"] == 0
    )
    assert api.delete("/v2/apps/nope/tasks").status_code == 404


def test_stuck_group_update_rolls_back_with_its_dependencies(api: httpx.Client) -> None:
    """The multi-service release path: PUT a group, it hangs, DELETE its deployment."""
    good = {
        "apps": [{**app_def(), "id": "api"}, {**app_def(), "id": "ui", "dependencies": ["api"]}]
    }
    assert api.put("/v2/groups/rel", json=good).status_code == 200
    wait_for("release 1 healthy", lambda: _idle(api) and _deployed(api, "/rel/ui", 1))
    first = api.get("/v2/groups/rel").json()["version"]
    broken = {
        "dependencies": [],
        "apps": [
            {**app_def(), "id": "api", "cmd": "exec sleep 600"},  # never healthy
            {**app_def(), "id": "ui"},
        ],
    }
    plan = api.put("/v2/groups/rel?dryRun=true", json=broken)
    assert plan.status_code == 200 and api.get("/v2/deployments").json() == []
    assert [[a["app"] for a in s["actions"]] for s in plan.json()["steps"]] == [
        ["/rel/api", "/rel/ui"]
    ]
    stuck = api.put("/v2/groups/rel", json=broken).json()
    wait_for(
        "new api task up", lambda: len(api.get("/v2/apps/rel/api").json()["app"]["tasks"]) == 2
    )
    assert api.put("/v2/groups/rel", json=good).status_code == 409  # locked by the stuck one
    rollback = api.delete(f"/v2/deployments/{stuck['deploymentId']}")
    assert rollback.status_code == 200
    wait_for("rolled back", lambda: _idle(api) and _deployed(api, "/rel/api", 1))
    restored = api.get("/v2/groups/rel").json()
    assert [a["cmd"] for a in restored["apps"]] == [app_def()["cmd"]] * 2
    assert restored["apps"][1]["dependencies"] == ["/rel/api"]
    assert first in api.get("/v2/groups/rel/versions").json()


def test_many_apps_in_one_put(api: httpx.Client) -> None:
    body = [{**app_def(), "id": "/multi/a"}, {**app_def(), "id": "multi/b"}]
    answer = api.put("/v2/apps", json=body)
    assert answer.status_code == 200, answer.text
    (dep,) = api.get("/v2/deployments").json()
    assert dep["id"] == answer.json()["deploymentId"]
    assert dep["affectedApps"] == ["/multi/a", "/multi/b"]
    wait_for("both healthy", lambda: _idle(api) and _deployed(api, "/multi/b", 1))
    assert api.patch("/v2/apps", json=[{"id": "/multi/zzz", "instances": 1}]).status_code == 404


def test_groups_and_their_versions_survive_a_restart(
    docker_client: docker.DockerClient, sim_image: str, tmp_path: Path
) -> None:
    settings = Settings(
        name=f"t{uuid.uuid4().hex[:8]}", ports=base.port_block(), state_dir=tmp_path
    )
    group = {"apps": [{**app_def(), "id": "one"}], "dependencies": ["/elsewhere"]}
    try:
        with (
            MarathonSim(settings, docker_client) as first,
            httpx.Client(base_url=first.url, timeout=10) as api,
        ):
            assert api.put("/v2/groups/keep", json=group).status_code == 200
            wait_for("deployed", lambda: _idle(api) and _deployed(api, "/keep/one", 1))
            before = api.get("/v2/groups/keep").json()
            versions = api.get("/v2/groups/keep/versions").json()
        with (
            MarathonSim(settings, docker_client) as second,
            httpx.Client(base_url=second.url, timeout=10) as api,
        ):
            assert api.get("/v2/groups/keep").json() == before
            assert api.get("/v2/groups/keep/versions").json() == versions
            assert before["dependencies"] == ["/elsewhere"]
    finally:
        mine = {"label": f"conveyor.sim.instance={settings.name}"}
        for container in docker_client.containers.list(all=True, filters=mine):
            container.remove(force=True)
