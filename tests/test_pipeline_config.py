"""Bad pipeline files stop everything before any work, with one line per problem; and
the registry password stays out of the reprs of the config and of the clients."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from conveyor.clients.registry import RegistryClient
from conveyor.config import load_pipeline
from conveyor.connections import Connections
from conveyor.errors import ConfigError
from tasks.runtime import resolve_secret
from tests.pipeline_support import (
    PASSWORD_ENV,
    App,
    FlowProcess,
    Stack,
    pipeline_data,
    write_pipeline,
)
from tests.pipeline_support import app as app  # the per-test sample app
from tests.pipeline_support import stack as stack  # the shared session fixture


def _broken(data: dict[str, Any]) -> dict[str, Any]:
    """Three problems at once: a missing field, a wrong type, an unknown driver."""
    bad = copy.deepcopy(data)
    del bad["registry"]["repository"]
    bad["environments"][0]["driver"]["port"] = "eighty"
    bad["environments"][1]["driver"] = {"kind": "kubernetes", "port": 1}
    return bad


BROKEN_LINES = [
    "registry.repository: required field is missing",
    "environments[0].driver.port: Input should be a valid integer, unable to parse string as an "
    "integer (got 'eighty')",
    "environments[1].driver: unknown driver 'kubernetes'; expected one of: 'docker', 'marathon'",
]


def _sample(tmp_path: Path) -> dict[str, Any]:
    """A valid document shaped like the tests' pipeline files, without the stack."""
    context = tmp_path / "hello"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text("FROM scratch\n")
    registry = {
        "url": "http://127.0.0.1:5000",
        "repository": "conveyor/hello",
        "username": "conveyor",
        "password": {"env": PASSWORD_ENV},
    }
    envs = [
        {"name": n, "tag": f"{n}-ready", "driver": {"kind": "docker", "port": 18080}}
        for n in ("integration", "production")
    ]
    return {
        "app": {"name": "hello", "context": str(context)},
        "registry": registry,
        "environments": envs,
    }


def test_load_pipeline_names_the_file_and_the_field_of_every_problem(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path / "bad.yaml", _broken(_sample(tmp_path)))
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    assert caught.value.source == str(path)
    assert sorted(caught.value.problems) == sorted(BROKEN_LINES)
    for line in BROKEN_LINES:
        assert f"  {path}: {line}" in str(caught.value).splitlines()


def test_load_pipeline_reports_a_missing_dockerfile(tmp_path: Path) -> None:
    data = _sample(tmp_path)
    data["app"]["dockerfile"] = "Containerfile"
    with pytest.raises(ConfigError) as caught:
        load_pipeline(write_pipeline(tmp_path / "p.yaml", data))
    assert caught.value.problems == [
        f"app.dockerfile: file not found: {tmp_path / 'hello' / 'Containerfile'}"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["environments"][0].pop("tag"),
            "environments[0].tag: required field is missing",
        ),
        (lambda d: d["app"].update(nmae="x"), "app.nmae: unknown field (check the spelling)"),
        (
            lambda d: d["environments"][1]["driver"].pop("kind"),
            "environments[1].driver: a driver needs 'kind' (one of: 'docker', 'marathon')",
        ),
        (
            lambda d: d["registry"].update(password={"env": "A", "file": "b"}),
            "registry.password: Value error, set exactly one of 'env', 'file' or 'block'",
        ),
    ],
)
def test_load_pipeline_messages(tmp_path: Path, change: Any, expected: str) -> None:
    data = _sample(tmp_path)
    change(data)
    with pytest.raises(ConfigError) as caught:
        load_pipeline(write_pipeline(tmp_path / "p.yaml", data))
    assert caught.value.problems == [expected]


@pytest.mark.docker
@pytest.mark.prefect
def test_ship_refuses_bad_pipeline_files_before_any_work(
    stack: Stack, app: App, tmp_path: Path
) -> None:
    broken = write_pipeline(tmp_path / "broken.yaml", _broken(pipeline_data(app)))
    no_dockerfile = pipeline_data(app)
    no_dockerfile["app"]["dockerfile"] = "Containerfile"
    missing = write_pipeline(tmp_path / "no-dockerfile.yaml", no_dockerfile)
    # Both at once: each costs mostly the start of a Python with Prefect in it.
    runs = {
        path: FlowProcess(
            stack, ["ship", "-p", str(path), "--auto-approve"], path.with_suffix(".log")
        )
        for path in (broken, missing)
    }
    codes = {path: run.wait(120) for path, run in runs.items()}
    expected = {
        broken: BROKEN_LINES,
        missing: [f"app.dockerfile: file not found: {app.source / 'Containerfile'}"],
    }
    for path, lines in expected.items():
        output = runs[path].output
        assert codes[path] == 2, output[-3000:]
        for line in lines:
            assert f"{path}: {line}" in [o.strip() for o in output.splitlines()], output[-3000:]
    assert app.local_tags() == []
    assert app.containers("integration") == [] and app.containers("production") == []


@pytest.mark.docker
def test_the_registry_password_is_in_no_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-" + tmp_path.name
    monkeypatch.setenv(PASSWORD_ENV, secret)
    config = load_pipeline(write_pipeline(tmp_path / "p.yaml", _sample(tmp_path)))
    resolved = resolve_secret(config.registry.password)  # type: ignore[arg-type]
    assert resolved.get_secret_value() == secret
    client = RegistryClient.from_config(config.registry, SecretStr(secret))
    try:
        with Connections(config, resolve_secret=resolve_secret) as connections:
            auth = connections.registry_auth()
            driver = connections.driver(config.environments[0])
            shown = [
                repr(config),
                str(config),
                repr(resolved),
                repr(auth),
                repr(client),
                repr(driver),
                repr(connections),
                repr(connections.registry()),
            ]
    finally:
        client.close()
    assert not [text for text in shown if secret in text]
