"""Clients and drivers built from the pipeline file, with secrets resolved here only."""

from __future__ import annotations

from pydantic import SecretStr

from conveyor.clients.registry import RegistryClient
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.drivers.base import DeployDriver
from conveyor.promotion import ManifestLocker
from tasks.common import resolve_secret


def registry_password(pipeline: Pipeline) -> SecretStr | None:
    ref = pipeline.registry.password
    return resolve_secret(ref) if ref is not None else None


def registry_auth(pipeline: Pipeline) -> tuple[str, SecretStr] | None:
    password = registry_password(pipeline)
    if pipeline.registry.username is None or password is None:
        return None
    return pipeline.registry.username, password


def registry_client(pipeline: Pipeline) -> RegistryClient:
    cfg = pipeline.registry
    if cfg.kind == "acr":
        from conveyor.clients.acr import acr_registry_client

        return acr_registry_client(cfg, _acr_credential(pipeline))
    return RegistryClient.from_config(cfg, registry_password(pipeline))


def _acr_credential(pipeline: Pipeline):  # type: ignore[no-untyped-def]
    from conveyor.clients.acr import credential_for
    from conveyor.config import AcrConfig

    acr = pipeline.registry.acr or AcrConfig()
    secret = resolve_secret(acr.client_secret) if acr.client_secret else None
    return credential_for(acr, secret)


def manifest_locker(pipeline: Pipeline) -> ManifestLocker | None:
    """ACR locks promoted manifests against change; other registries rely on the tag policy."""
    acr = pipeline.registry.acr
    if pipeline.registry.kind != "acr" or (acr is not None and not acr.lock_promoted):
        return None
    from conveyor.clients.acr import AcrManifestLocker

    return AcrManifestLocker(pipeline.registry.url, _acr_credential(pipeline))


def driver_for(pipeline: Pipeline, env: EnvironmentConfig) -> DeployDriver:
    from conveyor.drivers.factory import make_driver

    return make_driver(pipeline, env, resolve_secret, registry_auth(pipeline))
