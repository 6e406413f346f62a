"""The ``docker`` deploy driver: the app as containers on one Docker Engine.

Each environment has at most one *current* container (running, host networking,
listening on 127.0.0.1:<port>) and one stopped *previous* container kept for
rollback. A deploy first proves the release healthy as a *candidate* on a side
port, then cuts over, and puts the old release back if the new one fails there.

Docker cannot change a container's labels, so "relabelling" a container means
replacing it by an identical one (same local image, same settings) that carries the
new role; the app is stateless by contract, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress

import docker
import httpx
from docker.models.containers import Container

from conveyor.clients.docker_engine import engine_errors
from conveyor.clients.http import send
from conveyor.config.drivers import DockerDriverConfig
from conveyor.config.environment import HealthConfig
from conveyor.drivers.base import DeployedState, DeployOutcome, Instance, Progress, no_progress
from conveyor.errors import ConveyorError, DeploymentFailed, HealthCheckFailed
from conveyor.net import free_port, port_free
from conveyor.probe import wait_healthy
from conveyor.release import Release

CURRENT, PREVIOUS, CANDIDATE = "current", "previous", "candidate"
STOP_TIMEOUT_S = 10
STATUS_PROBE_TIMEOUT_S = 2.0


def managed_containers(
    client: docker.DockerClient, app: str, environment: str, role: str
) -> list[Container]:
    """The containers conveyor made for ``app`` in ``environment`` in ``role``, newest first.

    Newest first because after a crash mid-deploy (or between writing a release record
    and removing the older one) the latest is what ran, or was deployed, last.
    """
    labels = [
        "conveyor.managed=1",
        f"conveyor.app={app}",
        f"conveyor.environment={environment}",
        f"conveyor.role={role}",
    ]
    with engine_errors(f"{environment}: list {role} containers of {app}"):
        found = client.containers.list(all=True, filters={"label": labels})
    return sorted(found, key=lambda c: c.attrs.get("Created", ""), reverse=True)


class DockerDriver:
    """One environment of one app on the Docker Engine behind ``client``."""

    def __init__(
        self,
        environment: str,
        config: DockerDriverConfig,
        client: docker.DockerClient,
        app: str,
        port_env: str,
        health: HealthConfig,
        http: httpx.Client,
        registry_auth: dict[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.environment = environment
        self.config = config
        self.client = client
        self.app = app
        self.port_env = port_env
        self.health = health
        self.http = http
        self._auth = registry_auth
        # A member of a release of several services: every member's CONVEYOR_URL_<SERVICE>.
        self._extra_env = dict(extra_env or {})

    def __repr__(self) -> str:
        return f"DockerDriver(app={self.app!r}, environment={self.environment!r})"

    # --- reading --------------------------------------------------------------

    def _containers(self, role: str) -> list[Container]:
        return managed_containers(self.client, self.app, self.environment, role)

    def _one(self, role: str) -> Container | None:
        found = self._containers(role)
        running = [c for c in found if c.status == "running"]
        return (running or found or [None])[0]

    def _verified_digest(self, container: Container) -> tuple[str | None, str]:
        """The label's digest if the container's image really has it, and a remark."""
        digest = container.labels.get("conveyor.digest")
        with engine_errors(f"{self.environment}: inspect image of {container.name}"):
            repo_digests = container.image.attrs.get("RepoDigests") or []
        if digest and any(d.endswith("@" + digest) for d in repo_digests):
            return digest, ""
        return None, f"{container.name}: label says {digest} but image has {repo_digests}"

    def _answers(self, port: int) -> bool:
        url = f"http://{self.config.host}:{port}{self.health.path}"
        request = self.http.build_request("GET", url, timeout=STATUS_PROBE_TIMEOUT_S)
        try:
            response = send(self.http, request, f"{self.environment} health {url}")
        except ConveyorError:
            return False
        return response.status_code == self.health.expect_status

    def status(self) -> DeployedState:
        current, previous = self._one(CURRENT), self._one(PREVIOUS)
        previous_digest = previous.labels.get("conveyor.digest") if previous else None
        if current is None:
            return DeployedState(self.environment, None, None, (), previous_digest)
        digest, remark = self._verified_digest(current)
        port = self.config.port
        healthy = current.status == "running" and self._answers(port)
        detail = {"container": current.name, "state": current.status}
        if remark:
            detail["warning"] = remark
        return DeployedState(
            environment=self.environment,
            digest=digest,
            version=current.labels.get("conveyor.version"),
            instances=(
                Instance(self.config.host, port, healthy, agent=current.short_id, digest=digest),
            ),
            previous_digest=previous_digest,
            detail=detail,
        )

    def plan(self, release: Release) -> str:
        state = self.status()
        target = f"{release.version} ({release.digest})"
        where = f"{self.environment} on {self.config.host}:{self.config.port}"
        if state.digest is None:
            return f"{where}: first deploy of {self.app} {target}"
        if state.runs(release):
            return f"{where}: no change, {self.app} {target} already runs healthy"
        if state.digest == release.digest:
            return f"{where}: restart {self.app} {target}, it runs but is not healthy"
        return (
            f"{where}: {self.app} {state.version} ({state.digest}) -> {target}; "
            f"{state.version} is kept for rollback"
        )

    # --- containers -------------------------------------------------------------

    def _name(self, role: str, digest: str) -> str:
        return f"conveyor-{self.app}-{self.environment}-{role}-{digest[7:19]}"

    def _remove(self, container: Container) -> None:
        with engine_errors(f"{self.environment}: remove {container.name}"):
            container.remove(force=True)

    def _stop(self, container: Container) -> None:
        with engine_errors(f"{self.environment}: stop {container.name}"):
            container.stop(timeout=STOP_TIMEOUT_S)

    def _create(
        self, image: str, digest: str, version: str, role: str, port: int, start: bool
    ) -> Container:
        name = self._name(role, digest)
        with engine_errors(f"{self.environment}: create {name}"):
            # A leftover of an interrupted run under the same name is ours: replace it.
            for stale in self.client.containers.list(all=True, filters={"name": f"^/{name}$"}):
                stale.remove(force=True)
            container = self.client.containers.create(
                image,
                name=name,
                detach=True,
                network_mode="host",
                # An init as PID 1 passes SIGTERM on: a shell or httpd as PID 1 ignores
                # it and every stop would wait out the whole timeout.
                init=True,
                environment={
                    **self._extra_env,
                    self.port_env: str(port),
                    "HOST": self.config.host,
                },
                labels={
                    "conveyor.managed": "1",
                    "conveyor.app": self.app,
                    "conveyor.environment": self.environment,
                    "conveyor.digest": digest,
                    "conveyor.version": version,
                    "conveyor.role": role,
                },
                restart_policy={"Name": "unless-stopped"} if role == CURRENT else None,
            )
            if start:
                container.start()
        return container

    def _recreate(self, container: Container, role: str, start: bool) -> Container:
        """The same release as ``container`` under another role; the old one goes."""
        labels = container.labels
        with engine_errors(f"{self.environment}: read image of {container.name}"):
            image = container.image.id
        self._remove(container)
        return self._create(
            image,
            labels["conveyor.digest"],
            labels.get("conveyor.version", "?"),
            role,
            self.config.port,
            start,
        )

    def _logs(self, container: Container) -> str:
        with suppress(ConveyorError), engine_errors(f"logs of {container.name}"):
            container.reload()
            tail = container.logs(tail=10).decode(errors="replace").strip()
            return f" [container {container.status}; last log lines: {tail or '(none)'}]"
        return ""

    def _wait(self, container: Container, port: int) -> None:
        try:
            wait_healthy(
                self.http,
                [f"http://{self.config.host}:{port}"],
                self.health.path,
                self.health.expect_status,
                self.health.timeout_s,
                self.health.interval_s,
            )
        except HealthCheckFailed as exc:
            raise HealthCheckFailed(f"{exc}{self._logs(container)}") from None

    def _require_free(self, port: int, what: str) -> None:
        if not port_free(self.config.host, port):
            raise DeploymentFailed(
                f"{self.environment}: port {self.config.host}:{port} for the {what} is taken "
                "by another process; stop it or change the environment's port"
            )

    # --- deploying ------------------------------------------------------------

    def _pull(self, release: Release, progress: Progress) -> str:
        progress(f"{self.environment}: pulling {release.image}")
        with engine_errors(f"{self.environment}: pull {release.image}"):
            image = self.client.images.pull(release.image, auth_config=self._auth)
        if not any(d.endswith("@" + release.digest) for d in image.attrs.get("RepoDigests", [])):
            raise DeploymentFailed(f"{release.image}: pulled image does not carry that digest")
        return str(image.id)

    def _candidate_port(self) -> int:
        host, port = self.config.host, self.config.port
        if self.config.candidate_port is not None:
            return self.config.candidate_port
        if port < 65535 and port_free(host, port + 1):
            return port + 1
        return free_port(host)

    def _try_candidate(self, image: str, release: Release, progress: Progress) -> None:
        port = self._candidate_port()
        self._require_free(port, "candidate")
        progress(f"{self.environment}: starting candidate {release.short} on port {port}")
        candidate = self._create(image, release.digest, release.version, CANDIDATE, port, True)
        try:
            self._wait(candidate, port)
        except HealthCheckFailed as exc:
            raise DeploymentFailed(
                f"{self.environment}: candidate {release.version} ({release.short}) is not "
                f"healthy, nothing was changed: {exc}"
            ) from None
        finally:
            self._remove(candidate)
        progress(f"{self.environment}: candidate {release.short} is healthy")

    def _cut_over(self, image: str, digest: str, version: str, progress: Progress) -> Container:
        """Replace the current container by ``image``; restart the old one on failure.

        The new container is created before the old one stops and the old one becomes
        ``previous`` only once the new one is healthy: the gap is a stop and a start.
        """
        old = self._one(CURRENT)
        # Only a different, verifiable release is worth keeping for a rollback.
        old_digest = self._verified_digest(old)[0] if old is not None else None
        keep = old if old is not None and old_digest not in (None, digest) else None
        if old is not None and keep is None:
            self._remove(old)
        new = self._create(image, digest, version, CURRENT, self.config.port, start=False)
        try:
            if keep is not None:
                progress(f"{self.environment}: stopping {keep.name}")
                self._stop(keep)
            self._require_free(self.config.port, "release")
            progress(f"{self.environment}: starting {version} on port {self.config.port}")
            with engine_errors(f"{self.environment}: start {new.name}"):
                new.start()
            self._wait(new, self.config.port)
        except ConveyorError as exc:
            self._remove(new)
            restored = self._restore(keep, progress)
            raise DeploymentFailed(
                f"{self.environment}: {version} failed after the cut-over: {exc}; {restored}"
            ) from None
        previous = self._recreate(keep, PREVIOUS, start=False) if keep is not None else None
        self._keep_one_previous(new, previous)
        return new

    def _keep_one_previous(self, current: Container, previous: Container | None) -> None:
        """Remove every other container of the environment but one previous release.

        That is the release this cut-over replaced or, when there was none running
        (first deploy, rerun after an interrupted one), the newest previous left.
        """
        digest = current.labels.get("conveyor.digest")
        others = [
            c for c in self._containers(PREVIOUS) if c.labels.get("conveyor.digest") != digest
        ]
        keep = {current.id, (previous or (others[0] if others else current)).id}
        for container in self._containers(CURRENT) + self._containers(PREVIOUS):
            if container.id not in keep:
                self._remove(container)

    def _restore(self, old: Container | None, progress: Progress) -> str:
        """Start ``old`` again after its successor failed; say what was restored."""
        if old is None:
            return "there was nothing to restore"
        version = old.labels.get("conveyor.version")
        progress(f"{self.environment}: restoring {version}")
        with engine_errors(f"{self.environment}: restart {old.name}"):
            old.start()
        try:
            self._wait(old, self.config.port)
        except HealthCheckFailed as exc:
            raise DeploymentFailed(
                f"{self.environment}: the new release failed and restoring {version} "
                f"failed too: {exc}"
            ) from None
        return f"restored {version}"

    def _outcome(self, changed: bool, message: str, progress: Progress) -> DeployOutcome:
        progress(message)
        return DeployOutcome(self.status(), changed, message)

    def deploy(self, release: Release, progress: Progress = no_progress) -> DeployOutcome:
        if self.status().runs(release):
            return self._outcome(
                False, f"{self.environment}: {release.version} already runs healthy", progress
            )
        image = self._pull(release, progress)
        self._try_candidate(image, release, progress)
        self._cut_over(image, release.digest, release.version, progress)
        return self._outcome(
            True, f"{self.environment}: {release.version} ({release.short}) deployed", progress
        )

    def rollback(self, progress: Progress = no_progress) -> DeployOutcome:
        previous = self._one(PREVIOUS)
        if previous is None:
            raise DeploymentFailed(f"{self.environment}: no previous release to roll back to")
        digest, remark = self._verified_digest(previous)
        if digest is None:
            raise DeploymentFailed(f"{self.environment}: cannot roll back: {remark}")
        version = previous.labels.get("conveyor.version", "?")
        with engine_errors(f"{self.environment}: read image of {previous.name}"):
            image = str(previous.image.id)
        progress(f"{self.environment}: rolling back to {version} ({digest[7:19]})")
        self._cut_over(image, digest, version, progress)
        return self._outcome(True, f"{self.environment}: rolled back to {version}", progress)

    def withdraw(self, progress: Progress = no_progress) -> None:
        """Remove the current container: the undo of a first deploy, which had nothing
        before it to return to."""
        current = self._one(CURRENT)
        if current is not None:
            progress(f"{self.environment}: removing {current.name}, it had no earlier release")
            self._remove(current)

    def preflight(self, release: Release) -> None:
        """One Docker Engine has no cluster to check before a deploy."""

    def demand(self) -> None:
        """Nothing schedules the containers over agents whose capacity could be checked."""

    def close(self) -> None:
        """The Docker and HTTP clients belong to the caller, who closes them."""
