"""Checks across fields and against the files a pipeline file names, run once the
document has its shape. Each problem is one line that starts with the field's path."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.config.drivers import MarathonDriverConfig
from conveyor.config.paths import AllowedRoots, secret_files

if TYPE_CHECKING:
    from conveyor.config import Pipeline

MAX_TEMPLATE_BYTES = 1024 * 1024


def consistency_problems(p: Pipeline) -> list[str]:
    """Names and tags: one environment per name, one tag per environment, every tag moving."""
    problems = []
    first_name: dict[str, int] = {}
    first_tag: dict[str, str] = {}
    moving = set(p.registry.moving_tags)
    for i, env in enumerate(p.environments):
        if env.name in first_name:
            problems.append(
                f"environments[{i}].name: {env.name!r} is already the name of "
                f"environments[{first_name[env.name]}]; environment names must be unique"
            )
        first_name.setdefault(env.name, i)
        if env.tag in first_tag:
            problems.append(
                f"environments[{i}].tag: {env.tag!r} is already the tag of "
                f"{first_tag[env.tag]}; each environment needs a tag of its own"
            )
        first_tag.setdefault(env.tag, env.name)
        if moving and env.tag not in moving:
            problems.append(
                f"environments[{i}].tag: {env.tag!r} is not in registry.moving_tags "
                f"({', '.join(p.registry.moving_tags)}); an environment's tag moves with "
                "each release, and every other tag is immutable"
            )
    return problems


def _template_problem(field: str, path: Path) -> str | None:
    if not path.is_file():
        return f"{field}: file not found: {path}"
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        return f"{field}: cannot be read: {exc.strerror}"
    if len(raw) > MAX_TEMPLATE_BYTES:
        return f"{field}: larger than {MAX_TEMPLATE_BYTES // 1024} KiB: {path}"
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return f"{field}: not valid JSON ({' '.join(str(exc).split())[:200]}): {path}"
    if not isinstance(data, dict):
        return f"{field}: must be a JSON object (one Marathon app): {path}"
    return None


def _app_problems(p: Pipeline, roots: AllowedRoots) -> list[str]:
    if p.single_app is not None:
        return _context_problems("app", p.single_app.context, p.single_app.dockerfile, roots)
    problems: list[str] = []
    for i, s in enumerate(p.services):
        problems += _context_problems(f"services[{i}]", s.context, s.dockerfile, roots)
        for env, settings in s.environments.items():
            if settings.app_template is not None:
                field = f"services[{i}].environments.{env}.app_template"
                template = settings.app_template
                problem = roots.outside_repository(field, template, "app templates")
                problem = problem or _template_problem(field, template)
                if problem:
                    problems.append(problem)
    return problems


def _context_problems(
    prefix: str, context: Path, dockerfile: Path, roots: AllowedRoots
) -> list[str]:
    outside = roots.outside_repository(f"{prefix}.context", context, "build contexts")
    if outside:
        return [outside]
    if not context.is_dir():
        return [f"{prefix}.context: directory not found: {context}"]
    dockerfile = Path(os.path.normpath(context / dockerfile))
    outside = roots.outside_repository(f"{prefix}.dockerfile", dockerfile, "Dockerfiles")
    if outside:
        return [outside]
    if not dockerfile.is_file():
        return [f"{prefix}.dockerfile: file not found: {dockerfile}"]
    return []


def file_problems(p: Pipeline, roots: AllowedRoots) -> list[str]:
    """Every path stays where it may be, and what must exist exists and parses."""
    problems = _app_problems(p, roots)
    for i, env in enumerate(p.environments):
        if isinstance(env.driver, MarathonDriverConfig):
            field = f"environments[{i}].driver.app_template"
            template = env.driver.app_template
            problem = roots.outside_repository(field, template, "app templates")
            problem = problem or _template_problem(field, template)
            if problem:
                problems.append(problem)
    for i, env in enumerate(p.environments):
        signers = env.approval.allowed_signers if env.approval else None
        if signers is not None:
            field = f"environments[{i}].approval.allowed_signers"
            problem = roots.outside_repository(field, signers, "allowed-signers files")
            if problem is None and not signers.is_file():
                problem = f"{field}: file not found: {signers}"
            if problem:
                problems.append(problem)
    for field, file in secret_files(p):
        problem = roots.outside_secrets(field, file)
        if problem:
            problems.append(problem)
    return problems
