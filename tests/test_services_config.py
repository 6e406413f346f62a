"""A pipeline file of several services: every cross-reference is checked before any work,
one line per problem naming the field; the single ``app:`` form is a release of one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.config import load_pipeline
from conveyor.errors import ConfigError


def _document(tmp_path: Path, services: list[dict[str, Any]]) -> Path:
    for s in services:
        context = tmp_path / s["name"]
        context.mkdir(exist_ok=True)
        (context / "Dockerfile").write_text("FROM scratch\n")
        s.setdefault("context", s["name"])
    doc = {
        "name": "shop",
        "services": services,
        "registry": {"url": "http://127.0.0.1:5000", "repository": "conveyor/shop"},
        "environments": [
            {
                "name": "integration",
                "tag": "integration-ready",
                "driver": {"kind": "docker", "port": 18080},
            }
        ],
    }
    file = tmp_path / "pipeline.yaml"
    file.write_text(yaml.safe_dump(doc))
    return file


def _problems(file: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_pipeline(file)
    return err.value.problems


def test_members_come_dependencies_first_each_in_its_own_repository(tmp_path: Path) -> None:
    file = _document(
        tmp_path,
        [
            {"name": "front", "depends_on": ["api"]},
            {"name": "api", "depends_on": ["worker"]},
            {"name": "worker"},
        ],
    )
    pipeline = load_pipeline(file)
    assert [m.name for m in pipeline.members] == ["worker", "api", "front"]
    assert pipeline.repository_of(pipeline.members[0]) == "conveyor/shop/worker"
    assert pipeline.release_name == "shop"
    with pytest.raises(ConfigError, match="handles one app; the file names 3"):
        _ = pipeline.app
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "conveyor"), "validate", "-p", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "valid: release shop of 3 services (worker, api, front)" in shown.stdout


def test_the_single_app_form_is_a_release_of_one(tmp_path: Path) -> None:
    file = _document(tmp_path, [{"name": "hello"}])
    data = yaml.safe_load(file.read_text())
    data["app"] = data.pop("services")[0]
    del data["name"]
    file.write_text(yaml.safe_dump(data))
    pipeline = load_pipeline(file)
    assert [m.name for m in pipeline.members] == ["hello"]
    assert pipeline.repository_of(pipeline.members[0]) == "conveyor/shop"
    assert pipeline.release_name == "hello"


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        (
            [
                {"name": "a", "depends_on": ["b"]},
                {"name": "b", "depends_on": ["c"]},
                {"name": "c", "depends_on": ["a"]},
            ],
            ["services: dependency cycle a -> b -> c -> a"],
        ),
        (
            [{"name": "a", "depends_on": ["nope"]}, {"name": "b"}],
            ["services[0].depends_on[0]: no service named 'nope' in this file (known: a, b)"],
        ),
        (
            [{"name": "a"}, {"name": "a"}],
            [
                "services[1].name: 'a' is already the name of services[0]; service names must be unique"
            ],
        ),
        (
            [{"name": "a", "depends_on": ["a"]}],
            ["services[0].depends_on[0]: 'a' depends on itself"],
        ),
        (
            [{"name": "a", "environments": {"staging": {"port": 1}}}],
            [
                "services[0].environments.staging: no environment named 'staging' (known: integration)"
            ],
        ),
    ],
    ids=["cycle", "unknown-dependency", "duplicate-name", "self", "unknown-environment"],
)
def test_bad_service_lists_are_one_clear_line_each(
    tmp_path: Path, services: list[dict[str, Any]], expected: list[str]
) -> None:
    assert _problems(_document(tmp_path, services)) == expected


def test_app_and_services_together_are_refused(tmp_path: Path) -> None:
    file = _document(tmp_path, [{"name": "a"}])
    data = yaml.safe_load(file.read_text())
    data["app"] = {"name": "a", "context": "a"}
    file.write_text(yaml.safe_dump(data))
    assert _problems(file) == [
        "(top level): Value error, give either 'app' (one service) or 'services' (a list), not both"
    ]
