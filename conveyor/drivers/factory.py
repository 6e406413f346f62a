"""The driver an environment's ``driver.kind`` names, with its clients built here."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from pydantic import SecretStr

from conveyor.clients.docker_engine import connect
from conveyor.config import DockerDriverConfig, EnvironmentConfig, Pipeline, SecretRef
from conveyor.drivers.base import DeployDriver
from conveyor.drivers.docker import DockerDriver
from conveyor.drivers.marathon import MarathonDriver

SecretResolver = Callable[[SecretRef], SecretStr]


class _OwningDockerDriver(DockerDriver):
    """A docker driver that closes the clients the factory made for it."""

    def close(self) -> None:
        self.client.close()
        self.http.close()


def _docker_driver(
    pipeline: Pipeline,
    env: EnvironmentConfig,
    cfg: DockerDriverConfig,
    registry_auth: tuple[str, SecretStr] | None,
) -> DeployDriver:
    client = connect(cfg.docker_host)
    auth = None
    if registry_auth is not None:
        auth = {"username": registry_auth[0], "password": registry_auth[1].get_secret_value()}
    return _OwningDockerDriver(
        env.name,
        cfg,
        client,
        pipeline.app.name,
        pipeline.app.port_env,
        env.health,
        httpx.Client(timeout=10),
        registry_auth=auth,
    )


def make_driver(
    pipeline: Pipeline,
    env: EnvironmentConfig,
    resolve_secret: SecretResolver,
    registry_auth: tuple[str, SecretStr] | None,
) -> DeployDriver:
    cfg = env.driver
    if isinstance(cfg, DockerDriverConfig):
        return _docker_driver(pipeline, env, cfg, registry_auth)
    return MarathonDriver(env.name, cfg, resolve_secret)
