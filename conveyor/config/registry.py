"""The one private registry every environment pulls from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from conveyor.config.base import SecretRef, StrictModel


class AcrConfig(StrictModel):
    """Azure Container Registry specifics: lock promoted manifests against change."""

    lock_promoted: bool = True
    # azure-identity credential kind; "default" is DefaultAzureCredential.
    credential: Literal["default", "client_secret", "managed_identity"] = "default"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretRef | None = None


class RegistryConfig(StrictModel):
    url: str = Field(pattern=r"^https?://[^/]+$")
    repository: str = Field(
        pattern=r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$"
    )
    username: str | None = None
    password: SecretRef | None = None
    ca_bundle: Path | None = None
    kind: Literal["oci", "acr"] = "oci"
    acr: AcrConfig | None = None
    # Tags that follow the newest release through a stage; every other tag is immutable.
    moving_tags: list[str] = Field(
        default_factory=lambda: ["integration-ready", "production-ready"]
    )
    # How many integration-ready digests housekeeping keeps per repository.
    keep_integration_ready: int = Field(default=10, ge=1)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]
