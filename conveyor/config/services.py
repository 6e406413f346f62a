"""A release of several services: each built from its own context, deployed together.

The single ``app:`` form is a release of one service; ``services:`` names several, with
the dependencies that order their deployment. Every cross-reference is checked before
any work: unique names, known dependencies, no cycle, known environments.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from conveyor.config.app import AppConfig
from conveyor.config.base import StrictModel

if TYPE_CHECKING:
    from conveyor.config import Pipeline


class ServiceEnvironment(StrictModel):
    """What one service needs in one environment beyond the environment's own driver."""

    # Marathon: this service's app definition (the group's member).
    app_template: Path | None = None
    # Docker driver: the host port this service listens on there.
    port: int | None = Field(default=None, ge=1, le=65535)
    candidate_port: int | None = Field(default=None, ge=1, le=65535)


class ServiceConfig(AppConfig):
    # The port the service listens on inside its container (told through ``port_env``).
    port: int | None = Field(default=None, ge=1, le=65535)
    depends_on: list[str] = Field(default_factory=list)
    # Default: ``<registry.repository>/<name>``.
    repository: str | None = Field(default=None, pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
    environments: dict[str, ServiceEnvironment] = Field(default_factory=dict)

    @classmethod
    def of_app(cls, app: AppConfig) -> ServiceConfig:
        return cls.model_validate(app.model_dump())


def _cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """One dependency cycle as the path that closes it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in deps.get(name, []):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep in deps and dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in deps:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def dependency_order(services: list[ServiceConfig]) -> list[ServiceConfig]:
    """Dependencies before their dependants; ties keep the file's order."""
    by_name = {s.name: s for s in services}
    done: list[str] = []
    while len(done) < len(services):
        for s in services:
            if s.name not in done and all(d in done for d in s.depends_on):
                done.append(s.name)
                break
        else:
            raise ValueError("dependency cycle")  # refused by service_problems before
    return [by_name[n] for n in done]


def service_problems(p: Pipeline) -> list[str]:
    problems: list[str] = []
    if len(p.services) > 1 and p.name is None:
        problems.append(
            "name: a release of several services needs a name (its Marathon group, "
            "its release artifact, its records)"
        )
    first: dict[str, int] = {}
    for i, s in enumerate(p.services):
        if s.name in first:
            problems.append(
                f"services[{i}].name: {s.name!r} is already the name of services[{first[s.name]}]; "
                "service names must be unique"
            )
        first.setdefault(s.name, i)
    envs = {e.name for e in p.environments}
    for i, s in enumerate(p.services):
        for j, dep in enumerate(s.depends_on):
            if dep not in first:
                problems.append(
                    f"services[{i}].depends_on[{j}]: no service named {dep!r} in this file "
                    f"(known: {', '.join(first)})"
                )
            elif dep == s.name:
                problems.append(f"services[{i}].depends_on[{j}]: {s.name!r} depends on itself")
        for env in s.environments:
            if env not in envs:
                problems.append(
                    f"services[{i}].environments.{env}: no environment named {env!r} "
                    f"(known: {', '.join(sorted(envs))})"
                )
    if not problems:
        cycle = _cycle({s.name: s.depends_on for s in p.services})
        if cycle:
            problems.append(f"services: dependency cycle {' -> '.join(cycle)}")
    return problems
