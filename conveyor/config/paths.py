"""Which files a pipeline file may name: those of its own repository.

A pipeline file is written by whoever can push to the repository; the worker that runs
it has files of its own (``/etc/shadow``, other teams' keys) that must not become a
build context or a registry password. Build contexts, Dockerfiles and app templates
stay inside the repository; ``file:`` secret references may also name the secrets
folder of the worker's settings. Paths are compared after resolving links, so a link
inside the repository that points outside is outside too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from conveyor.config.base import SecretRef
from conveyor.config.settings import WorkerSettings

_GIT_TIMEOUT_S = 15.0


def git(folder: Path, *args: str) -> str | None:
    """``git -C folder args``'s output, or None where git fails, hangs or is missing.

    Read-only: ``--no-optional-locks`` keeps ``git status`` from refreshing the index, so
    it never writes ``.git/index.lock`` into a work tree that a concurrent build of the
    same repository is putting into its context tar (a lock file that vanishes between
    listing and reading broke such a build).
    """
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def repository_of(pipeline_file: Path) -> Path:
    """The git work tree holding the file, or the file's folder outside git."""
    folder = pipeline_file.resolve().parent
    top = git(folder, "rev-parse", "--show-toplevel")
    return Path(top).resolve() if top else folder


@dataclass(frozen=True)
class AllowedRoots:
    repository: Path
    secrets: Path | None = None

    @classmethod
    def for_file(cls, pipeline_file: Path) -> AllowedRoots:
        secrets = WorkerSettings().secrets_dir
        return cls(repository_of(pipeline_file), secrets.resolve() if secrets else None)

    def outside_repository(self, field: str, path: Path, what: str) -> str | None:
        if path.resolve().is_relative_to(self.repository):
            return None
        return (
            f"{field}: {path} is outside the pipeline file's repository ({self.repository}); "
            f"{what} must stay inside it"
        )

    def outside_secrets(self, field: str, path: Path) -> str | None:
        real = path.resolve()
        if real.is_relative_to(self.repository):
            return None
        if self.secrets is not None and real.is_relative_to(self.secrets):
            return None
        where = f"the pipeline file's repository ({self.repository})"
        if self.secrets is not None:
            where += f" or the worker's secrets folder ({self.secrets})"
        else:
            where += " or the worker's secrets folder (CONVEYOR_SECRETS_DIR, not set)"
        return f"{field}: secret file {path} is outside {where}"


def secret_files(node: object, at: str = "") -> Iterator[tuple[str, Path]]:
    """(field path, file) of every ``file:`` secret reference in the model ``node``."""
    if isinstance(node, SecretRef):
        if node.file is not None:
            yield f"{at}.file", node.file
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from secret_files(getattr(node, name), f"{at}.{name}" if at else name)
    elif isinstance(node, list | tuple):
        for i, item in enumerate(node):
            yield from secret_files(item, f"{at}[{i}]")
