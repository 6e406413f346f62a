"""Mesosphere's own DC/OS CLI (dcoscli 0.6.1, installed by scripts/setup.sh into
.venv-dcoscli) against ``conveyor sim marathon --dcos``: what operators type every day."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conveyor.sim.marathon import MarathonSim
from tests import test_sim_marathon as base
from tests.parts import missing
from tests.test_sim_marathon import app_def, wait_for

pytestmark = pytest.mark.docker

DCOS = Path(__file__).resolve().parent.parent / ".venv-dcoscli" / "bin" / "dcos"
UID = "conveyor-ci"
make_sim = base.make_sim
sim_image = base.sim_image


class Cli:
    """Runs ``dcos`` with its own DCOS_DIR, so no operator's configuration leaks in."""

    def __init__(self, home: Path) -> None:
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("DCOS_") and k != "PYTHONPATH"
        }
        self.env.update(DCOS_DIR=str(home / "dcos"), HOME=str(home), NO_PROXY="127.0.0.1")
        self.home = home

    def __call__(self, *args: str, stdin: str | None = None, ok: bool = True) -> str:
        done = subprocess.run(
            [str(DCOS), *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if ok:
            assert done.returncode == 0, f"dcos {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json"))

    def file(self, name: str, body: dict[str, Any]) -> str:
        path = self.home / name
        path.write_text(json.dumps(body))
        return str(path)


@pytest.fixture
def cli(
    tmp_path: Path, make_sim: Callable[..., MarathonSim]
) -> tuple[Cli, MarathonSim, httpx.Client]:
    if not DCOS.exists():
        missing("dcoscli 0.6.1", "run scripts/setup.sh (it installs .venv-dcoscli)")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private = tmp_path / "sa.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    sim = make_sim(dcos=True, service_accounts={UID: public})
    run = Cli(tmp_path)
    run("cluster", "setup", sim.url, "--username", UID, "--private-key", str(private))
    token = run("config", "show", "core.dcos_acs_token").strip()
    api = httpx.Client(
        base_url=f"{sim.url}/service/marathon",
        headers={"Authorization": f"token={token}"},
        timeout=10,
    )
    return run, sim, api


def _app(api: httpx.Client, app_id: str) -> dict[str, Any]:
    return dict(api.get(f"/v2/apps{app_id}").json()["app"])


def _settled(api: httpx.Client, app_id: str, instances: int) -> bool:
    app = _app(api, app_id)
    return not app["deployments"] and app["tasksHealthy"] == instances == len(app["tasks"])


def test_operator_commands(cli: tuple[Cli, MarathonSim, httpx.Client]) -> None:
    run, sim, api = cli
    assert [c["url"] for c in run.json("cluster", "list")] == [sim.url]
    assert "pong" in run("marathon", "ping")

    run("marathon", "app", "add", run.file("web.json", {**app_def(), "id": "/cli/web"}))
    wait_for("web healthy", lambda: _settled(api, "/cli/web", 1))
    assert [a["id"] for a in run.json("marathon", "app", "list")] == ["/cli/web"]
    assert json.loads(run("marathon", "app", "show", "/cli/web"))["instances"] == 1

    run("marathon", "app", "update", "/cli/web", "instances=2")
    wait_for("web scaled", lambda: _settled(api, "/cli/web", 2))
    versions = json.loads(run("marathon", "app", "version", "list", "/cli/web"))
    assert len(versions) == 2

    before = {t["id"] for t in run.json("marathon", "task", "list", "/cli/web")}
    run("marathon", "app", "restart", "/cli/web")
    wait_for("web restarted", lambda: _settled(api, "/cli/web", 2))
    after = {t["id"] for t in run.json("marathon", "task", "list", "/cli/web")}
    assert len(after) == 2 and not after & before

    run("marathon", "app", "kill", "/cli/web")
    wait_for(
        "killed tasks replaced",
        lambda: (
            _settled(api, "/cli/web", 2)
            and not {t["id"] for t in _app(api, "/cli/web")["tasks"]} & after
        ),
    )

    stuck = {"cmd": "exec sleep 600"}  # never answers its health check
    run("marathon", "app", "update", "/cli/web", stdin=json.dumps(stuck))
    deployments = wait_for("stuck deployment", lambda: run.json("marathon", "deployment", "list"))
    run("marathon", "deployment", "rollback", deployments[0]["id"])
    wait_for("rolled back", lambda: _settled(api, "/cli/web", 2))
    assert _app(api, "/cli/web")["cmd"] == app_def()["cmd"]

    run("marathon", "app", "remove", "/cli/web")
    wait_for("web gone", lambda: api.get("/v2/apps/cli/web").status_code == 404)


def test_group_commands(cli: tuple[Cli, MarathonSim, httpx.Client]) -> None:
    run, _, api = cli
    group = {
        "id": "/shop",
        "apps": [
            {**app_def(), "id": "db"},
            {**app_def(), "id": "web", "dependencies": ["db"]},
        ],
    }
    run("marathon", "group", "add", run.file("shop.json", group))
    wait_for("shop healthy", lambda: _settled(api, "/shop/web", 1))
    web, db = _app(api, "/shop/web"), _app(api, "/shop/db")
    assert db["tasks"][0]["startedAt"] <= web["tasks"][0]["stagedAt"], "web started before db"
    assert [g["id"] for g in run.json("marathon", "group", "list")] == ["/shop"]
    shown = json.loads(run("marathon", "group", "show", "/shop"))
    assert [a["id"] for a in shown["apps"]] == ["/shop/db", "/shop/web"]

    run("marathon", "group", "scale", "/shop", "2")
    wait_for("shop scaled", lambda: _settled(api, "/shop/db", 2) and _settled(api, "/shop/web", 2))

    run("marathon", "group", "remove", "/shop")
    wait_for("shop gone", lambda: api.get("/v2/groups/shop").status_code == 404)
    assert run.json("marathon", "group", "list") == []
