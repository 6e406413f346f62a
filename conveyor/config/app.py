"""The application being delivered."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from conveyor.config.base import StrictModel


class AppConfig(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    context: Path
    dockerfile: Path = Path("Dockerfile")
    build_args: dict[str, str] = Field(default_factory=dict)
    # The environment variable that tells the app which port to listen on.
    port_env: str = "PORT"
