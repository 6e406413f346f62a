"""Deploy driver settings, one model per driver, chosen by ``kind``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

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
    """How to authenticate: none, Marathon's basic auth, or a DC/OS service account."""

    kind: Literal["none", "basic", "dcos"] = "none"
    username: str | None = None
    password: SecretRef | None = None
    # DC/OS service account: its uid and the PEM private key whose public half IAM holds.
    uid: str | None = None
    private_key: SecretRef | None = None
    # Lifetime of the self-signed login JWT; IAM sets the session token's own lifetime.
    login_token_ttl_s: int = Field(default=300, ge=30, le=86400)

    @model_validator(mode="after")
    def _complete(self) -> MarathonAuth:
        needs = {"basic": ("username", "password"), "dcos": ("uid", "private_key")}
        missing = [f for f in needs.get(self.kind, ()) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"auth kind {self.kind!r} needs {' and '.join(missing)}")
        return self


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
    # React to Marathon's event stream; polling with backoff remains the fallback.
    event_stream: bool = True
    # Upper bound of the polling backoff (and the safety re-check while streaming).
    poll_max_interval_s: float = Field(default=2.0, gt=0)
    # How long the rollback after a failed deploy may take before giving up on it.
    rollback_timeout_s: float = Field(default=300, gt=0)
