"""The composition root: secrets resolved in one place, each client built once per run
(also when a flow's submitted tasks ask from several threads), everything closed at the end."""

from __future__ import annotations

import contextvars
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from conveyor.config import Pipeline, SecretRef, parse_pipeline
from conveyor.connections import Connections, secret_resolver
from conveyor.errors import ConfigError, SecretNotFound
from tasks.runtime import connections, run_connections

PASSWORD = "pw-" + "x" * 12


def _pipeline(tmp_path: Path, **registry: Any) -> Pipeline:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    template = tmp_path / "app.json"
    template.write_text(json.dumps({"id": "/hello", "instances": 3, "cpus": 0.5, "mem": 64}))
    marathon = {
        "kind": "marathon",
        "url": "http://127.0.0.1:9",
        "app_id": "/hello",
        "app_template": str(template),
        "auth": {"kind": "basic", "username": "ops", "password": {"env": "CONN_TEST_MARATHON"}},
    }
    data = {
        "app": {"name": "hello", "context": str(tmp_path)},
        "registry": {
            "url": "http://127.0.0.1:5000",
            "repository": "conveyor/hello",
            "username": "conveyor",
            "password": {"env": "CONN_TEST_REGISTRY"},
            **registry,
        },
        "environments": [
            {"name": "integration", "tag": "integration-ready", "driver": marathon},
            {"name": "production", "tag": "production-ready", "driver": marathon},
        ],
    }
    return parse_pipeline(data, "pipeline.yaml", tmp_path)


class CountingResolver:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, ref: SecretRef) -> SecretStr:
        with self._lock:
            self.asked.append(ref.describe())
        return SecretStr(PASSWORD)


def test_secrets_come_from_the_environment_a_file_or_the_injected_block_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONN_TEST_SECRET", "from-env")
    (tmp_path / "secret").write_text("from-file\n")
    blocks: list[str] = []

    def load_block(name: str) -> SecretStr:
        blocks.append(name)
        return SecretStr("from-block")

    resolve = secret_resolver(load_block)
    assert resolve(SecretRef(env="CONN_TEST_SECRET")).get_secret_value() == "from-env"
    assert resolve(SecretRef(file=tmp_path / "secret")).get_secret_value() == "from-file"
    assert resolve(SecretRef(block="registry")).get_secret_value() == "from-block"
    assert blocks == ["registry"]


def test_a_missing_secret_names_where_it_was_looked_for(tmp_path: Path) -> None:
    resolve = secret_resolver()
    with pytest.raises(SecretNotFound, match="environment variable CONN_TEST_UNSET"):
        resolve(SecretRef(env="CONN_TEST_UNSET"))
    with pytest.raises(SecretNotFound, match="cannot be read"):
        resolve(SecretRef(file=tmp_path / "absent"))
    with pytest.raises(ConfigError, match="Prefect Secret block 'x'"):
        resolve(SecretRef(block="x"))


def test_each_client_is_built_once_however_many_threads_ask(tmp_path: Path) -> None:
    resolver = CountingResolver()
    pipeline = _pipeline(tmp_path)
    env = pipeline.environments[0]
    with Connections(pipeline, resolve_secret=resolver) as c:
        with ThreadPoolExecutor(8) as pool:
            registries = set(pool.map(lambda _: id(c.registry()), range(32)))
            drivers = set(pool.map(lambda _: id(c.driver(env)), range(32)))
        assert len(registries) == 1 and len(drivers) == 1
        c.registry_auth()
        c.driver(pipeline.environments[1])
        registry = c.registry()
    assert c.builds == {"secret": 2, "registry": 1, "driver": 2}
    # Each reference is resolved once, however many clients need it.
    assert sorted(resolver.asked) == [
        "environment variable CONN_TEST_MARATHON",
        "environment variable CONN_TEST_REGISTRY",
    ]
    with pytest.raises(RuntimeError, match="closed"):
        registry.get_manifest("conveyor/hello", "sha256:" + "0" * 64)


def test_the_marathon_driver_gets_its_credentials_and_demand_from_the_root(
    tmp_path: Path,
) -> None:
    pipeline = _pipeline(tmp_path)
    with Connections(pipeline, resolve_secret=CountingResolver()) as c:
        driver = c.driver(pipeline.environments[0])
        assert isinstance(driver.auth, httpx.BasicAuth)  # type: ignore[attr-defined]
        demand = driver.demand()
        assert demand is not None and (demand.instances, demand.cpus) == (3, 0.5)
        assert PASSWORD not in repr(c) + repr(driver)


def test_the_tasks_of_a_flow_run_share_its_connections_and_others_get_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONN_TEST_REGISTRY", PASSWORD)
    pipeline = _pipeline(tmp_path)
    moved = pipeline.registry.model_copy(update={"url": "http://127.0.0.1:5001"})
    other = pipeline.model_copy(update={"registry": moved})
    with run_connections(pipeline) as opened:
        with connections(pipeline) as c:
            assert c is opened
        # Prefect runs submitted tasks in threads with a copy of the flow's context.
        with ThreadPoolExecutor(2) as pool:
            seen = pool.submit(contextvars.copy_context().run, _same_as, pipeline, opened)
            assert seen.result()
        with connections(other) as own:
            assert own is not opened
            registry = own.registry()
        with pytest.raises(RuntimeError, match="closed"):
            registry.get_manifest("conveyor/hello", "sha256:" + "0" * 64)
    with connections(pipeline) as after:
        assert after is not opened


def _same_as(pipeline: Pipeline, opened: Connections) -> bool:
    with connections(pipeline) as c:
        return c is opened
