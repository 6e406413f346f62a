"""Deploy driver settings, one model per driver, chosen by ``kind``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from conveyor.config.base import SecretRef, StrictModel


class DockerDriverConfig(StrictModel):
    """The app as containers on the local Docker Engine (a developer's workstation)."""

    kind: Literal["docker"]
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    # The candidate is proven healthy on this port before the cut-over.
    candidate_port: int | None = Field(default=None, ge=1, le=65535)
    docker_host: str | None = None


class MarathonAuth(StrictModel):
    kind: Literal["none", "basic", "dcos"] = "none"
    username: str | None = None
    password: SecretRef | None = None
    uid: str | None = None
    private_key: SecretRef | None = None


class MarathonDriverConfig(StrictModel):
    """The app on DC/OS through Marathon (directly, or behind the admin router)."""

    kind: Literal["marathon"]
    url: str = Field(pattern=r"^https?://")
    # True when ``url`` is the DC/OS cluster (Marathon at /service/marathon/).
    dcos: bool = False
    app_id: str = Field(pattern=r"^(/[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
    app_template: Path
    auth: MarathonAuth = Field(default_factory=MarathonAuth)
    ca_bundle: Path | None = None
    verify_tls: bool = True
    deploy_timeout_s: float = Field(default=600, gt=0)
    lock_wait_s: float = Field(default=300, ge=0)
    force: bool = False
    request_timeout_s: float = Field(default=10, gt=0)


DriverConfig = DockerDriverConfig | MarathonDriverConfig
