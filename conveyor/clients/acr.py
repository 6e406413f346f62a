"""Azure Container Registry: AAD token exchange for the OCI client, and manifest locking.

ACR's registry speaks the distribution protocol, but its token endpoint wants an ACR
refresh token, which comes from swapping an AAD access token at ``/oauth2/exchange``.
Promoted manifests are locked (``can_write``/``can_delete`` false) through
azure-containerregistry so production digests cannot be overwritten or deleted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from azure.containerregistry import ContainerRegistryClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from pydantic import SecretStr

from conveyor.clients.http import error_for_status
from conveyor.clients.registry import RegistryClient
from conveyor.clients.registry_auth import Challenge, TokenFlow
from conveyor.config.registry import AcrConfig, RegistryConfig
from conveyor.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectFailed,
    NotFound,
    PermissionDenied,
    Rejected,
    ServerError,
)

AUDIENCE = "https://containerregistry.azure.net"
SYSTEM = "ACR"
# ACR refresh tokens live about three hours; renew well before.
REFRESH_TTL = 60 * 60.0


@contextmanager
def translate_azure_errors(system: str = SYSTEM) -> Iterator[None]:
    """The one boundary where azure-core exceptions become conveyor errors."""
    try:
        yield
    except ClientAuthenticationError as exc:
        raise AuthenticationFailed(f"{system}: authentication failed ({exc.message})") from None
    except ResourceNotFoundError as exc:
        raise NotFound(f"{system}: not found ({exc.message})") from None
    except HttpResponseError as exc:
        status = exc.status_code or 0
        what = f"{system}: answered {status} ({exc.message})"
        if status == 403:
            raise PermissionDenied(what) from None
        if status >= 500 or status == 429:
            raise ServerError(what, status) from None
        raise Rejected(what) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise ConnectFailed(f"{system}: cannot reach the registry ({exc.message})") from None
    except AzureError as exc:
        raise ConnectFailed(f"{system}: {type(exc).__name__} ({exc.message})") from None


class AcrTokenSource:
    """Token source of ``RegistryClient`` for ACR: AAD token -> refresh token -> access token."""

    def __init__(
        self, credential: TokenCredential, tenant: str | None = None, audience: str = AUDIENCE
    ) -> None:
        self._credential = credential
        self.tenant = tenant
        self.aad_scope = audience.rstrip("/") + "/.default"
        self._refresh: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"AcrTokenSource(tenant={self.tenant!r})"

    def _aad_token(self) -> str:
        with translate_azure_errors("AAD"):
            return self._credential.get_token(self.aad_scope).token

    def flow(self, challenge: Challenge) -> TokenFlow:
        if challenge.service is None:
            raise Rejected(f"{SYSTEM}: challenge without a service: {challenge}")
        base = challenge.realm.rsplit("/oauth2/", 1)[0]
        if self._refresh is None or self._refresh[1] < time.monotonic():
            form = {
                "grant_type": "access_token",
                "service": challenge.service,
                "access_token": self._aad_token(),
            }
            if self.tenant:
                form["tenant"] = self.tenant
            body = yield from _post(f"{base}/oauth2/exchange", form)
            self._refresh = (str(body["refresh_token"]), time.monotonic() + REFRESH_TTL)
        form = {
            "grant_type": "refresh_token",
            "service": challenge.service,
            "scope": challenge.scope or "",
            "refresh_token": self._refresh[0],
        }
        try:
            body = yield from _post(challenge.realm, form)
        except AuthenticationFailed:
            self._refresh = None
            raise
        return str(body["access_token"])


def _post(url: str, form: dict[str, str]) -> Any:
    response = yield httpx.Request("POST", url, data=form)
    response.read()
    if response.status_code != 200:
        raise error_for_status(SYSTEM, response, "token exchange refused")
    try:
        return response.json()
    except ValueError:
        raise Rejected(f"{SYSTEM}: {url} did not answer JSON") from None


class AcrManifestLocker:
    """Locks manifests with azure-containerregistry (``promotion.ManifestLocker``)."""

    def __init__(
        self,
        endpoint: str,
        credential: TokenCredential | None = None,
        *,
        audience: str = AUDIENCE,
        client: ContainerRegistryClient | None = None,
        **transport_options: Any,
    ) -> None:
        if client is None:
            client = ContainerRegistryClient(
                endpoint, credential, audience=audience, **transport_options
            )
        self._client = client

    def __repr__(self) -> str:
        return "AcrManifestLocker()"

    def lock(self, repository: str, digest: str) -> None:
        with translate_azure_errors():
            props = self._client.update_manifest_properties(
                repository, digest, can_write=False, can_delete=False
            )
        if props.can_write or props.can_delete:
            raise Rejected(f"{SYSTEM}: {repository}@{digest} is still writable after locking")

    def close(self) -> None:
        self._client.close()


def credential_for(config: AcrConfig, client_secret: SecretStr | None = None) -> TokenCredential:
    """The azure-identity credential the pipeline file asks for."""
    from azure.identity import (
        ClientSecretCredential,
        DefaultAzureCredential,
        ManagedIdentityCredential,
    )

    if config.credential == "client_secret":
        if not (config.tenant_id and config.client_id and client_secret):
            raise ConfigError(
                "registry.acr", ["client_secret needs tenant_id, client_id and client_secret"]
            )
        return ClientSecretCredential(
            config.tenant_id, config.client_id, client_secret.get_secret_value()
        )
    if config.credential == "managed_identity":
        return ManagedIdentityCredential(client_id=config.client_id)
    return DefaultAzureCredential()


def acr_registry_client(
    config: RegistryConfig, credential: TokenCredential, **kwargs: Any
) -> RegistryClient:
    """A ``RegistryClient`` that authenticates to ACR with ``credential``."""
    tenant = config.acr.tenant_id if config.acr else None
    source = AcrTokenSource(credential, tenant)
    return RegistryClient(config.url, ca_bundle=config.ca_bundle, token_source=source, **kwargs)
