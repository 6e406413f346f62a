"""The pipeline file: one YAML document describing the app, the registry and the
environments in promotion order. ``load_pipeline`` validates it completely before
any work starts and reports every problem at once, one line each, naming the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from conveyor.config.app import AppConfig
from conveyor.config.approval import ApprovalConfig, Approver, FreezeWindow, NotifyConfig
from conveyor.config.base import ApproverName, SecretRef, StrictModel, approver_problem
from conveyor.config.checks import consistency_problems, file_problems
from conveyor.config.drivers import (
    DockerDriverConfig,
    MarathonAuth,
    MarathonDriverConfig,
)
from conveyor.config.environment import (
    EnvironmentConfig,
    HealthConfig,
    HttpCheck,
    TestsConfig,
)
from conveyor.config.paths import AllowedRoots
from conveyor.config.preflight import AgentVmSelector, PreflightConfig, VSphereConfig
from conveyor.config.registry import AcrConfig, RegistryConfig
from conveyor.config.scan import IgnoreEntry, ScanPolicy, TrivyDbConfig
from conveyor.config.services import (
    ServiceConfig,
    ServiceEnvironment,
    dependency_order,
    service_problems,
)
from conveyor.config.yaml_doc import DocumentRefused, read_document
from conveyor.errors import ConfigError

__all__ = [
    "AcrConfig",
    "AgentVmSelector",
    "AllowedRoots",
    "AppConfig",
    "ApprovalConfig",
    "Approver",
    "ApproverName",
    "DockerDriverConfig",
    "EnvironmentConfig",
    "FreezeWindow",
    "HealthConfig",
    "HttpCheck",
    "IgnoreEntry",
    "MarathonAuth",
    "MarathonDriverConfig",
    "NotifyConfig",
    "Pipeline",
    "PreflightConfig",
    "RegistryConfig",
    "ScanPolicy",
    "SecretRef",
    "ServiceConfig",
    "ServiceEnvironment",
    "TestsConfig",
    "TrivyDbConfig",
    "VSphereConfig",
    "approver_problem",
    "load_pipeline",
    "parse_pipeline",
]


class Pipeline(StrictModel):
    # The single-app form; ``services`` names several. Exactly one of them is given.
    single_app: AppConfig | None = Field(default=None, alias="app")
    services: list[ServiceConfig] = Field(default_factory=list)
    # The release's name (Marathon group, artifact keys); default: the single app's name.
    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    registry: RegistryConfig
    scan: ScanPolicy = Field(default_factory=ScanPolicy)
    environments: list[EnvironmentConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> Pipeline:
        if self.single_app is not None and self.services:
            raise ValueError("give either 'app' (one service) or 'services' (a list), not both")
        return self

    @property
    def app(self) -> AppConfig:
        """The one app of a single-service release, for the steps that handle one."""
        if self.single_app is not None:
            return self.single_app
        if len(self.services) == 1:
            return self.services[0]
        raise ConfigError(
            "pipeline",
            [f"services: this step handles one app; the file names {len(self.services)}"],
        )

    @property
    def release_name(self) -> str:
        return self.name or self.app.name

    @property
    def members(self) -> list[ServiceConfig]:
        """Every service, dependencies first; the single-app form is a release of one."""
        if self.single_app is not None:
            return [ServiceConfig.of_app(self.single_app)]
        return dependency_order(self.services)

    def repository_of(self, service: ServiceConfig) -> str:
        if service.repository:
            return service.repository
        if self.single_app is not None:
            return self.registry.repository
        return f"{self.registry.repository}/{service.name}"

    def environment(self, name: str) -> EnvironmentConfig:
        for env in self.environments:
            if env.name == name:
                return env
        known = ", ".join(e.name for e in self.environments)
        raise ConfigError("pipeline", [f"environments: no environment {name!r} (known: {known})"])


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("docker", "marathon") and out.endswith(".driver"):
            # pydantic adds the union tag to the location; the user wrote no such key.
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling)"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        # The input is the whole driver mapping; the tag alone is what the user got wrong.
        return f"unknown driver {ctx.get('tag')!r}; expected one of: {ctx.get('expected_tags', '')}"
    if kind == "union_tag_not_found":
        return "a driver needs 'kind' (one of: 'docker', 'marathon')"
    msg = str(err["msg"])
    if "input" in err and not isinstance(err["input"], dict | list):
        msg += f" (got {err['input']!r})"
    return msg


# Keys whose string values are paths; they are relative to the pipeline file.
_PATH_KEYS = frozenset(
    {"context", "app_template", "ca_bundle", "file", "cache_dir", "allowed_signers"}
)


def _resolve_paths(node: Any, base: Path) -> None:
    """Make every path in the file relative to the file, not to the caller's cwd."""
    if isinstance(node, list):
        for item in node:
            _resolve_paths(item, base)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _PATH_KEYS and isinstance(value, str) and not Path(value).is_absolute():
                node[key] = os.path.normpath(base / value)
            else:
                _resolve_paths(value, base)


def parse_pipeline(
    data: Any, source: str, base: Path, roots: AllowedRoots | None = None
) -> Pipeline:
    """Validate a document read from ``source``; its relative paths are relative to ``base``.

    ``roots`` bounds which files it may name (default: ``base``'s repository).
    """
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            ["(top level): expected a mapping with app (or services), registry, environments"],
        )
    missing = []
    if data.get("app") is None and not data.get("services"):
        missing = ["app: required field is missing (or 'services', a list of services)"]
    _resolve_paths(data, base)
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        lines = [f"{_field_path(e['loc'])}: {_describe(e)}" for e in exc.errors()]
        raise ConfigError(source, missing + lines) from None
    if missing:
        raise ConfigError(source, missing)
    roots = roots or AllowedRoots.for_file(base / source)
    problems = consistency_problems(pipeline) + service_problems(pipeline)
    problems += file_problems(pipeline, roots)
    if problems:
        raise ConfigError(source, problems)
    return pipeline


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and validate a pipeline file and the files it names, touching no outside system.

    Raise ``ConfigError`` listing every problem, one line each; a file that is too big,
    too deep or too repetitive for its YAML to be read safely is one problem.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(str(path), ["file not found"])
    try:
        data = read_document(file)
    except DocumentRefused as exc:
        raise ConfigError(str(path), [exc.problem]) from None
    return parse_pipeline(data, str(path), file.resolve().parent, AllowedRoots.for_file(file))
