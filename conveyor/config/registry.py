"""The one private registry every environment pulls from."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

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
        default_factory=lambda: ["integration-ready", "production-ready"], min_length=1
    )
    # How many integration-ready digests housekeeping keeps per repository.
    keep_integration_ready: int = Field(default=10, ge=1)

    @field_validator("url")
    @classmethod
    def _plain_http_only_on_loopback(cls, url: str) -> str:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises on a port out of range
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}: {exc}") from None
        if parts.scheme == "http" and not _loopback(parts.hostname or ""):
            raise ValueError(
                "plain http is only for 127.0.0.1, ::1 or localhost: credentials and images "
                "would cross the network unencrypted; use https"
            )
        return url

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]


def _loopback(host: str) -> bool:
    """This machine by name or by address; 0.0.0.0 is every address, not this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host) in (
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
        )
    except ValueError:
        return False
