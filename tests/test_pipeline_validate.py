"""`conveyor validate` and load_pipeline against the mutation set: every malformed or
hostile variant of deployments/local.yaml ends in one clear line naming the field, in
milliseconds; every valid one is accepted. Nothing here touches an outside system."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor.config import approver_problem, load_pipeline
from conveyor.errors import ConfigError
from tests.config_mutations import MUTATIONS, ROOT, Mutation, bounded, make_repository, write


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("mutations") / "repo")


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_every_mutation_ends_in_one_clear_line_or_is_valid(
    mutation: Mutation, repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, env = write(mutation, repository)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with bounded():
        try:
            load_pipeline(path)
        except ConfigError as exc:
            problems = exc.problems
        else:
            problems = []
    if mutation.expect is None:
        assert problems == []
        return
    assert problems, "accepted, but the file is not valid"
    assert all(p.strip() and "\n" not in p for p in problems), problems
    assert [p for p in problems if mutation.expect in p], problems


def _validate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "conveyor"), "validate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "60"},
        check=False,
    )


def test_validate_prints_each_problem_as_one_plain_line_and_exits_1(
    repository: Path,
) -> None:
    markup = next(m for m in MUTATIONS if m.name == "markup-in-name")
    path, _ = write(markup, repository)
    text = path.read_text().replace("registry.url", "x")
    text = text.replace("url: http://127.0.0.1:5000", "url: http://203.0.113.5:5000")
    path.write_text(text)
    done = _validate("-p", str(path))
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{path}: app.name: String should match pattern '^[a-z0-9][a-z0-9-]{{0,62}}$' "
        "(got '[/bold]')",
        f"{path}: registry.url: Value error, plain http is only for 127.0.0.1, ::1 or "
        "localhost: credentials and images would cross the network unencrypted; use https "
        "(got 'http://203.0.113.5:5000')",
    ]


def test_validate_summarises_a_valid_file_and_exits_0() -> None:
    done = _validate("-p", "deployments/local.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "deployments/local.yaml: valid: app hello, registry 127.0.0.1:5000/conveyor/hello, "
        "environments integration -> production; 2 app template(s), "
        "4 secret file reference(s) checked"
    ]


def test_an_alias_bomb_is_refused_by_validate_in_one_line(repository: Path) -> None:
    # 600 bytes that expand to 10**10 values (the audit's 2.9 KB ran > 300 s).
    bomb = next(m for m in MUTATIONS if m.name == "alias-bomb-10-levels")
    path, _ = write(bomb, repository)
    done = _validate("-p", str(path))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{path}: YAML aliases expand to more than 20000 values (line 5)"
    ]


@pytest.mark.parametrize("name", ["", " ", "\t", " alice", "bob ", "al\u200bice", "a\nb"])
def test_approver_names_that_cannot_be_told_apart_are_refused(name: str) -> None:
    assert approver_problem(name)


def test_approver_names_as_written_are_accepted() -> None:
    assert [approver_problem(n) for n in ("alice", "Bob Smith", "dev-ops.1")] == [None] * 3
