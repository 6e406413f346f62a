"""The driver an environment's ``driver.kind`` names, with its clients built here."""

from __future__ import annotations

from collections.abc import Callable

import docker
import httpx
from pydantic import SecretStr

from conveyor.config import DockerDriverConfig, EnvironmentConfig, Pipeline, SecretRef
from conveyor.drivers.base import DeployDriver
from conveyor.drivers.docker import DockerDriver
from conveyor.drivers.marathon import MarathonDriver
from conveyor.errors import ConnectFailed

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
    try:
        client = (
            docker.DockerClient(base_url=cfg.docker_host, timeout=120)
            if cfg.docker_host
            else docker.from_env(timeout=120)
        )
    except docker.errors.DockerException as exc:
        raise ConnectFailed(
            f"docker engine: cannot reach it ({exc}); is dockerd running?"
        ) from None
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
