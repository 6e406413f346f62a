"""The worker's own settings: what the machine running a flow allows, not the pipeline file.

The pipeline file comes from the repository being delivered, so it must not be able to
widen what the worker reads; these come from the worker's environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    # A folder of credential files that `file:` secret references may also name
    # (besides files inside the pipeline file's repository), e.g. /run/secrets.
    secrets_dir: Path | None = None
