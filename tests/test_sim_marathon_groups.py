"""The simulator's ids, groups, restarts and kills as Marathon serves them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conveyor.sim.marathon import pathid
from tests import test_sim_marathon as base
from tests.test_sim_marathon import app_def, wait_for

make_sim = base.make_sim
sim_image = base.sim_image
sim = base.sim


@pytest.fixture
def api(sim: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        yield client


# --- PathId rules (state/PathId.scala), one row per rule ----------------------------------

CANONICAL = [
    ("/a/b", "/", "/a/b"),  # absolute stays
    ("a/b", "/", "/a/b"),  # relative, against the root
    ("a/b", "/g", "/g/a/b"),  # relative, against its group
    ("//a///b//", "/", "/a/b"),  # leading, trailing and repeated slashes do not matter
    ("a/b/", "/g/h", "/g/h/a/b"),
    ("./a", "/g", "/g/a"),  # "." is the group itself
    ("../a", "/g/h", "/g/a"),  # ".." is the parent group
    ("../../../a", "/g", "/a"),  # ".." above the root stays at the root
    ("/g/../a", "/x", "/a"),  # an absolute id ignores the base, its ".." still resolves
    ("", "/g", "/g"),  # the empty id is the base
    ("/", "/g", "/"),
]


@pytest.mark.parametrize(("raw", "base_id", "expected"), CANONICAL)
def test_canonical_path(raw: str, base_id: str, expected: str) -> None:
    assert pathid.canonical(raw, base_id) == expected


VALIDITY = [
    ("/web", None, []),
    ("/team/web-1", None, []),
    ("/a.b.c", None, []),  # dots between labels are allowed
    ("/a/../b", None, []),  # ".." segments are allowed inside an id
    ("/Web", None, [pathid.INVALID_CHARS]),  # upper case
    ("/we_b", None, [pathid.INVALID_CHARS]),  # underscore
    ("/-web", None, [pathid.INVALID_CHARS]),  # leading hyphen
    ("/web-", None, [pathid.INVALID_CHARS]),  # trailing hyphen
    ("/a..b", None, [pathid.INVALID_CHARS]),  # empty label
    ("/web/tasks", None, [pathid.RESERVED_END]),  # reserved keywords end no id
    ("/web/versions", None, [pathid.RESERVED_END]),
    ("/web/restart", None, [pathid.RESERVED_END]),
    ("/web/..", None, [pathid.RESERVED_END]),
    ("/tasks/web", None, []),  # ... but may stand inside one
    ("/", None, [pathid.EMPTY]),  # an app or group needs a segment
    ("//", None, [pathid.EMPTY]),
    ("web", "/g", []),  # a nested id must be a direct child of its group
    ("/g/web", "/g", []),
    ("/other/web", "/g", ["Identifier is not child of '/g'"]),
    ("sub/web", "/g", ["Identifier is not child of '/g'"]),
]


@pytest.mark.parametrize(("raw", "base_id", "expected"), VALIDITY)
def test_path_validity(raw: str, base_id: str | None, expected: list[str]) -> None:
    assert pathid.errors(raw, base=base_id) == expected


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


def test_group_with_dependency_starts_in_order_and_reverts(api: httpx.Client) -> None:
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
