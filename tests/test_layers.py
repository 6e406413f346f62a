"""The layers hold: cli → flows → tasks → library → clients → config / errors / release.

Read from the source with ``ast`` (every import, also those inside functions), so a
later change cannot quietly make a lower layer reach up.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOUNDATION = ("conveyor.config", "conveyor.errors", "conveyor.release")
UPPER = ("prefect", "flows", "tasks")
# The library's top is where drivers, pre-flight and clients are composed; tasks and
# flows use drivers through their protocol and never name a platform's class.
PLATFORM_DRIVERS = ("conveyor.drivers.docker", "conveyor.drivers.marathon")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, with the line; ``from x import y`` yields x and x.y."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module(path).rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in paths
        for line, name in _imports(path)
        if _within(name, forbidden)
    ]


def _conveyor_imports_outside(paths: list[Path], allowed: tuple[str, ...]) -> list[str]:
    """Every import of a conveyor module from ``paths`` that ``allowed`` does not hold."""
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in paths
        for line, name in _imports(path)
        if _within(name, ("conveyor",)) and not _within(name, allowed)
    ]


# The local stack is library too: what of it needs Prefect's client (pools, the
# zombie automation) the CLI hands in.
CLI = ("conveyor.cli",)


def _library() -> list[Path]:
    return [p for p in _sources("conveyor") if not _within(_module(p), CLI)]


def test_the_library_imports_neither_prefect_nor_flows_nor_tasks() -> None:
    assert _violations(_library(), UPPER) == []


def test_the_library_never_imports_the_cli() -> None:
    assert _violations(_library(), CLI) == []


def test_clients_stand_on_config_errors_and_release_only() -> None:
    clients = _sources("conveyor/clients")
    assert _conveyor_imports_outside(clients, ("conveyor.clients", *FOUNDATION)) == []


def test_config_errors_and_release_import_nothing_above_them() -> None:
    foundation = [p for p in _sources("conveyor") if _within(_module(p), FOUNDATION)]
    assert _conveyor_imports_outside(foundation, FOUNDATION) == []


def test_tasks_never_import_flows_or_the_cli() -> None:
    assert _violations(_sources("tasks"), ("flows", "conveyor.cli")) == []


def test_flows_never_import_the_cli() -> None:
    assert _violations(_sources("flows"), ("conveyor.cli",)) == []


def test_tasks_and_flows_use_drivers_through_their_protocol() -> None:
    assert _violations(_sources("tasks", "flows"), PLATFORM_DRIVERS) == []


def test_the_cli_reaches_tasks_only_for_the_prefect_secret_resolver() -> None:
    cli = _sources("conveyor/cli")
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in cli
        for line, name in _imports(path)
        if _within(name, ("tasks",)) and not _within(name, ("tasks.runtime",))
    ]
    assert wrong == []


def test_the_cli_never_calls_a_task_body() -> None:
    calls = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _sources("conveyor/cli")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "fn"
    ]
    assert calls == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from prefect import flow\n", "prefect"),
        ("def f():\n    from tasks.runtime import logger\n", "tasks.runtime"),
        ("import flows.ship\n", "flows.ship"),
    ],
)
def test_the_reader_finds_imports_at_any_depth(
    tmp_path: Path, source: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rules above are only as good as the reader: it must see these."""
    monkeypatch.setattr("tests.test_layers.ROOT", tmp_path)
    module = tmp_path / "conveyor" / "sample.py"
    module.parent.mkdir()
    module.write_text(source)
    assert expected in [name for _, name in _imports(module)]
    assert _violations([module], UPPER)
