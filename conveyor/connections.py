"""The composition root: every client, driver, locker and vSphere session one pipeline
needs, built from its file and one secret resolver, and the only place a ``SecretRef``
becomes a secret.

A ``Connections`` lives as long as one flow run (or one CLI command): what it builds
holds connections and tokens, so it is built once on first use and closed with the
``Connections``. Building is locked because a flow's submitted tasks run in threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx
from pydantic import SecretStr

from conveyor.clients.docker_engine import connect
from conveyor.clients.registry import RegistryClient
from conveyor.clients.vsphere import VSphereClient
from conveyor.config import (
    DockerDriverConfig,
    EnvironmentConfig,
    MarathonDriverConfig,
    Pipeline,
    SecretRef,
    VSphereConfig,
)
from conveyor.drivers.base import DeployDriver
from conveyor.errors import ConfigError, SecretNotFound

if TYPE_CHECKING:
    import docker

    from conveyor.clients.trivy import Trivy
    from conveyor.promotion import ManifestLocker

SecretResolver = Callable[[SecretRef], SecretStr]
BlockLoader = Callable[[str], SecretStr]
T = TypeVar("T")
# Health probes and checks answer within seconds or count as failed.
PROBE_TIMEOUT_S = 10.0


def secret_resolver(load_block: BlockLoader | None = None) -> SecretResolver:
    """Environment variables and files are read here; a ``{block: name}`` reference goes to
    ``load_block``, which the Prefect layer supplies (the library does not import Prefect)."""

    def resolve(ref: SecretRef) -> SecretStr:
        if ref.env is not None:
            value = os.environ.get(ref.env)
            if not value:
                raise SecretNotFound(f"{ref.describe()} is not set")
            return SecretStr(value)
        if ref.file is not None:
            try:
                return SecretStr(ref.file.read_text().strip())
            except OSError as exc:
                raise SecretNotFound(f"{ref.describe()} cannot be read: {exc.strerror}") from None
        if load_block is None:
            raise ConfigError("pipeline", [f"{ref.describe()}: Prefect Secret blocks need Prefect"])
        return load_block(str(ref.block))

    return resolve


def marathon_auth(config: MarathonDriverConfig, resolve: SecretResolver) -> httpx.Auth | None:
    """The credentials a Marathon driver sends: basic auth, or a DC/OS service account login."""
    from conveyor.clients.dcos import LOGIN_PATH, DcosServiceAccountAuth

    auth = config.auth
    if auth.kind == "basic" and auth.username and auth.password:
        return httpx.BasicAuth(auth.username, resolve(auth.password).get_secret_value())
    if auth.kind == "dcos" and auth.uid and auth.private_key:
        login_url = config.url.rstrip("/") + LOGIN_PATH
        return DcosServiceAccountAuth(
            login_url, auth.uid, resolve(auth.private_key), auth.login_token_ttl_s
        )
    return None


class Connections:
    """What one pipeline talks to, each built once on first use and closed by ``close``."""

    def __init__(self, pipeline: Pipeline, *, resolve_secret: SecretResolver) -> None:
        self.pipeline = pipeline
        self._resolve = resolve_secret
        self._lock = threading.RLock()
        self._built: dict[tuple[str, ...], Any] = {}
        self._closing = ExitStack()
        # How many of each kind it built: one per run is the point, and tests hold it to that.
        self.builds: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Connections(app={self.pipeline.release_name!r}, built={sorted(self.builds)})"

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._built.clear()
            self._closing.close()

    def _once(self, key: tuple[str, ...], build: Callable[[], T], close: bool = True) -> T:
        with self._lock:
            if key not in self._built:
                made = build()
                if close and hasattr(made, "close"):
                    self._closing.callback(made.close)
                self._built[key] = made
                self.builds[key[0]] = self.builds.get(key[0], 0) + 1
            return cast(T, self._built[key])

    # --- secrets ------------------------------------------------------------

    def secret(self, ref: SecretRef) -> SecretStr:
        return self._once(("secret", ref.describe()), lambda: self._resolve(ref), close=False)

    def registry_auth(self) -> tuple[str, SecretStr] | None:
        """The registry's username and password, for the Docker Engine's push and pull."""
        cfg = self.pipeline.registry
        if cfg.username is None or cfg.password is None:
            return None
        return cfg.username, self.secret(cfg.password)

    # --- the registry ---------------------------------------------------------

    def registry(self) -> RegistryClient:
        return self._once(("registry",), self._registry)

    def _registry(self) -> RegistryClient:
        cfg = self.pipeline.registry
        if cfg.kind == "acr":
            from conveyor.clients.acr import acr_registry_client

            return acr_registry_client(cfg, self._acr_credential())
        password = self.secret(cfg.password) if cfg.password is not None else None
        return RegistryClient.from_config(cfg, password)

    def _acr_credential(self) -> Any:
        def build() -> Any:
            from conveyor.clients.acr import credential_for
            from conveyor.config import AcrConfig

            acr = self.pipeline.registry.acr or AcrConfig()
            secret = self.secret(acr.client_secret) if acr.client_secret else None
            return credential_for(acr, secret)

        return self._once(("acr credential",), build)

    def manifest_locker(self) -> ManifestLocker | None:
        """ACR locks promoted manifests against change; other registries rely on the tag policy."""
        registry = self.pipeline.registry
        if registry.kind != "acr" or (registry.acr is not None and not registry.acr.lock_promoted):
            return None

        def build() -> ManifestLocker:
            from conveyor.clients.acr import AcrManifestLocker

            return AcrManifestLocker(registry.url, self._acr_credential())

        return self._once(("manifest locker",), build)

    # --- engines, clusters and vCenter ---------------------------------------

    def docker(self, host: str | None = None) -> docker.DockerClient:
        """The Docker Engine at ``host`` (the environment's default when None)."""
        return self._once(("docker", host or ""), lambda: connect(host))

    def trivy(self) -> Trivy:
        """The scanner the pipeline's scan policy describes (its DB cache, its timeout)."""
        from conveyor.scan_policy import trivy_for

        return self._once(("trivy",), lambda: trivy_for(self.pipeline.scan))

    def http(self) -> httpx.Client:
        """The plain HTTP client of health probes and checks of the app itself."""
        return self._once(("http",), lambda: httpx.Client(timeout=PROBE_TIMEOUT_S))

    def driver(self, env: EnvironmentConfig) -> DeployDriver:
        return self._once(("driver", env.name), lambda: self._driver(env))

    def _driver(self, env: EnvironmentConfig) -> DeployDriver:
        cfg = env.driver
        if isinstance(cfg, DockerDriverConfig):
            return self._docker_driver(env, cfg)
        credentials = marathon_auth(cfg, self.secret)
        if self.pipeline.services:
            from conveyor.drivers.marathon_release import MarathonReleaseDriver, MemberSpec

            members = []
            for s in self.pipeline.members:
                here = s.environments.get(env.name)
                template = here.app_template if here and here.app_template else cfg.app_template
                members.append(MemberSpec(s.name, template, tuple(s.depends_on)))
            return MarathonReleaseDriver(env.name, cfg, members, auth=credentials)
        from conveyor.drivers.marathon import MarathonDriver

        return MarathonDriver(env.name, cfg, auth=credentials)

    def _docker_driver(self, env: EnvironmentConfig, cfg: DockerDriverConfig) -> DeployDriver:
        auth = self.registry_auth()
        registry_auth = (
            {"username": auth[0], "password": auth[1].get_secret_value()} if auth else None
        )
        if self.pipeline.services:
            from conveyor.drivers.docker_release import DockerReleaseDriver

            return DockerReleaseDriver(
                env.name,
                cfg,
                self.docker(cfg.docker_host),
                self.pipeline.release_name,
                self.pipeline.members,
                env.health,
                self.http(),
                registry_auth=registry_auth,
            )
        from conveyor.drivers.docker import DockerDriver

        app = self.pipeline.app
        return DockerDriver(
            env.name,
            cfg,
            self.docker(cfg.docker_host),
            app.name,
            app.port_env,
            env.health,
            self.http(),
            registry_auth=registry_auth,
        )

    def vsphere(self, env: EnvironmentConfig) -> VSphereClient | None:
        """A vCenter session for the environment's checks; None where none is configured."""
        cfg = env.preflight.vsphere
        if cfg is None:
            return None
        return self._once(("vsphere", env.name), lambda: self._vsphere_session(cfg))

    def _vsphere_session(self, cfg: VSphereConfig) -> VSphereClient:
        client = VSphereClient.from_config(cfg, self.secret(cfg.password))
        client.login()
        return client
