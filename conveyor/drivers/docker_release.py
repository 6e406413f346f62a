"""The ``docker`` deploy driver for a release of several services on one Docker Engine.

Each member is a ``DockerDriver`` of its own (containers labelled
``conveyor.app=<release>-<service>``, its own port, candidate and previous container)
and every member's containers are told every member's ``CONVEYOR_URL_<SERVICE>``.

Which release runs is kept in a *record*: a container that is never started, labelled
with the release (its artifact digest, version and members) and the release before
it. It is a container of its own because Docker cannot relabel a container, and a
member the release did not change keeps the container it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import docker
import httpx
from docker.models.containers import Container

from conveyor.clients.docker_engine import engine_errors
from conveyor.config.drivers import DockerDriverConfig
from conveyor.config.environment import HealthConfig
from conveyor.config.services import ServiceConfig, ServiceEnvironment, dependency_order
from conveyor.drivers.base import DeployedState, DeployOutcome, Progress, no_progress
from conveyor.drivers.docker import DockerDriver, managed_containers
from conveyor.errors import ConfigError, ConveyorError, DeploymentFailed, TransientError
from conveyor.release import Release
from conveyor.release_set import member_url_environment

RECORD = "record"
# Members started at once: each mostly waits on the engine and its health check, so
# beyond the cores; few enough that the engine's own CPU work stays a short queue.
DEPLOYS = 8
LABEL_RELEASE = "dev.conveyor.release"
LABEL_PREVIOUS = "dev.conveyor.release.previous"


@dataclass(frozen=True)
class _Record:
    current: Release
    previous: Release | None


def _ports(services: Sequence[ServiceConfig], environment: str) -> dict[str, int]:
    ports: dict[str, int] = {}
    problems: list[str] = []
    for s in services:
        port = (s.environments.get(environment) or ServiceEnvironment()).port or s.port
        field = f"services ({s.name}).environments.{environment}.port"
        if port is None:
            problems.append(f"{field}: the docker driver needs the host port {s.name} serves on")
        elif port in ports.values():
            problems.append(f"{field}: {port} is already another member's port")
        else:
            ports[s.name] = port
    if problems:
        raise ConfigError("pipeline", problems)
    return ports


def _levels(services: Sequence[ServiceConfig]) -> list[list[str]]:
    """The members by dependency depth: the first level depends on nothing, each next
    one only on members of the levels before it (no cycle: refused before any work)."""
    depth: dict[str, int] = {}
    for s in dependency_order(list(services)):
        depth[s.name] = 1 + max((depth[d] for d in s.depends_on), default=-1)
    return [
        [n for n, d in depth.items() if d == level]
        for level in range(max(depth.values(), default=-1) + 1)
    ]


def _prefixed(progress: Progress, member: str) -> Progress:
    return lambda message: progress(f"[{member}] {message}")


class DockerReleaseDriver:
    """One environment of a release of several services on the Docker Engine."""

    def __init__(
        self,
        environment: str,
        config: DockerDriverConfig,
        client: docker.DockerClient,
        name: str,
        services: Sequence[ServiceConfig],
        health: HealthConfig,
        http: httpx.Client,
        registry_auth: dict[str, str] | None = None,
    ) -> None:
        self.environment = environment
        self.client = client
        self.name = name
        ports = _ports(services, environment)
        urls = member_url_environment({n: f"http://{config.host}:{p}" for n, p in ports.items()})
        # Dependencies first (``services`` comes in ``pipeline.members`` order).
        self.members: dict[str, DockerDriver] = {}
        self.levels = _levels(services)
        for s in services:
            settings = s.environments.get(environment) or ServiceEnvironment()
            update = {"port": ports[s.name], "candidate_port": settings.candidate_port}
            self.members[s.name] = DockerDriver(
                environment,
                config.model_copy(update=update),
                client,
                f"{name}-{s.name}",
                s.port_env,
                health,
                http,
                registry_auth=registry_auth,
                extra_env=urls,
            )

    def __repr__(self) -> str:
        return f"DockerReleaseDriver(name={self.name!r}, environment={self.environment!r})"

    # --- the record -----------------------------------------------------------

    def _records(self) -> list[Container]:
        return managed_containers(self.client, self.name, self.environment, RECORD)

    def _record(self) -> _Record | None:
        records = self._records()
        if not records:
            return None
        labels = records[0].labels
        try:
            previous = labels.get(LABEL_PREVIOUS)
            return _Record(
                Release.model_validate_json(labels[LABEL_RELEASE]),
                Release.model_validate_json(previous) if previous else None,
            )
        except (KeyError, ValueError) as exc:
            raise DeploymentFailed(
                f"{self.environment}: release record {records[0].name} cannot be read: {exc}"
            ) from None

    def _write_record(self, release: Release, previous: Release | None) -> None:
        old = self._records()
        name = f"conveyor-{self.name}-{self.environment}-{RECORD}-{release.digest[7:19]}"
        labels = {
            "conveyor.managed": "1",
            "conveyor.app": self.name,
            "conveyor.environment": self.environment,
            "conveyor.role": RECORD,
            "conveyor.digest": release.digest,
            "conveyor.version": release.version,
            LABEL_RELEASE: release.model_dump_json(),
            LABEL_PREVIOUS: previous.model_dump_json() if previous else "",
        }
        with engine_errors(f"{self.environment}: write release record {name}"):
            for stale in self.client.containers.list(all=True, filters={"name": f"^/{name}$"}):
                stale.remove(force=True)
            # Any member's image will do: the record is never started.
            image = self.client.images.get(release.services[0].image)
            self.client.containers.create(image.id, name=name, labels=labels, network_mode="none")
            for container in old:
                if container.name != name:
                    container.remove(force=True)

    # --- reading --------------------------------------------------------------

    def _member(self, release: Release, name: str) -> Release:
        try:
            return release.member(name)
        except KeyError:
            raise DeploymentFailed(
                f"{self.environment}: release {release.version} has no member {name!r} "
                f"(it has: {', '.join(m.app for m in release.members) or 'none'})"
            ) from None

    def status(self) -> DeployedState:
        record = self._record()
        # Side by side: each member's is engine and HTTP round trips of its own.
        with ThreadPoolExecutor(max_workers=min(DEPLOYS, len(self.members) or 1)) as pool:
            found = {n: pool.submit(d.status) for n, d in self.members.items()}
        states = {n: f.result() for n, f in found.items()}
        instances = tuple(replace(i, member=n) for n, s in states.items() for i in s.instances)
        detail = {f"{n}.{k}": v for n, s in states.items() for k, v in s.detail.items()}
        if record is None:
            return DeployedState(self.environment, None, None, instances, None, detail)
        listed = {m.app: m.digest for m in record.current.members}
        astray = [n for n, s in states.items() if s.digest is None or s.digest != listed.get(n)]
        if astray:
            detail["warning"] = (
                f"not at release {record.current.version}: {', '.join(astray)} "
                "(a deploy puts them back)"
            )
        return DeployedState(
            environment=self.environment,
            digest=None if astray else record.current.digest,
            version=None if astray else record.current.version,
            instances=instances,
            previous_digest=record.previous.digest if record.previous else None,
            detail=detail,
        )

    def plan_members(self, release: Release) -> dict[str, str]:
        """Service -> what ``deploy(release)`` would change of it; changes nothing."""
        return {n: d.plan(self._member(release, n)) for n, d in self.members.items()}

    def plan(self, release: Release) -> str:
        head = f"{self.environment}: release {self.name} {release.version} ({release.short})"
        if self.status().runs(release):
            return f"{head}: no change, every member already runs healthy"
        sections = [f"--- {n}\n{text}" for n, text in self.plan_members(release).items()]
        return "\n".join([head, *sections])

    # --- deploying ------------------------------------------------------------

    def _undo(self, switched: list[tuple[str, bool]], progress: Progress) -> str:
        """Return every member already switched to what it ran before, dependants first:
        an older dependant calling a newer dependency meanwhile is the direction
        services stay compatible in; the reverse is not."""
        back, stuck = [], []
        for n, had_before in reversed(switched):
            driver = self.members[n]
            try:
                if had_before:
                    driver.rollback(progress)
                else:
                    driver.withdraw(progress)
                back.append(n)
            except ConveyorError as exc:
                stuck.append(f"{n} ({exc})")
        said = f"returned to the previous release: {', '.join(back)}" if back else ""
        if stuck:
            said += ("; " if said else "") + f"could NOT be returned: {', '.join(stuck)}"
        return said or "no member had been switched, nothing was changed"

    def _switch_one(
        self, n: str, release: Release, progress: Progress, rolling_back: bool
    ) -> tuple[bool, bool]:
        """One member to ``release``: (changed, it ran something before)."""
        driver = self.members[n]
        target = self._member(release, n)
        said = _prefixed(progress, n)
        before = driver.status()
        if rolling_back and before.digest and before.previous_digest == target.digest:
            driver.rollback(said)  # the image is local: no pull, no registry needed
            return True, True
        return driver.deploy(target, said).changed, before.digest is not None

    def _switch(self, release: Release, progress: Progress, rolling_back: bool) -> bool:
        """Every member to ``release``, dependencies first: a member is switched only
        once what it calls already runs the release's version, so a new front never
        calls an old API; the members of one level (none calls another) are switched
        side by side, at most ``DEPLOYS`` at once. All or nothing: when one fails, the
        rest of its level ends, and every member switched goes back."""
        switched: list[tuple[str, bool]] = []
        for level in self.levels:
            with ThreadPoolExecutor(max_workers=min(DEPLOYS, len(level))) as pool:
                futures = {n: pool.submit(self._switch_one, n, release, progress, rolling_back)
                           for n in level}  # fmt: skip
            failed: list[tuple[str, ConveyorError]] = []
            for n, future in futures.items():
                exc = future.exception()
                if exc is None:
                    changed, had_before = future.result()
                    if changed:
                        switched.append((n, had_before))
                elif isinstance(exc, ConveyorError):
                    failed.append((n, exc))
                else:
                    raise exc
            if failed:
                raise self._failed(release, failed, self._undo(switched, progress), progress)
        return bool(switched)

    def _failed(
        self,
        release: Release,
        failed: list[tuple[str, ConveyorError]],
        undone: str,
        progress: Progress,
    ) -> ConveyorError:
        """What a failed switch raises: DeploymentFailed naming each failed member, or
        the transient error (for a retry) when every failure was one."""
        lasting = [(n, exc) for n, exc in failed if not isinstance(exc, TransientError)]
        if not lasting:
            for n, exc in failed:
                progress(f"[{n}] failed ({exc}); {undone}")
            return failed[0][1]
        said = "; ".join(
            f"member {n!r} of release {release.version} failed: {exc}" for n, exc in lasting
        )
        return DeploymentFailed(f"{self.environment}: {said}; {undone}")

    def deploy(self, release: Release, progress: Progress = no_progress) -> DeployOutcome:
        if self.status().runs(release):
            message = f"{self.environment}: {release.version} already runs healthy"
            progress(message)
            return DeployOutcome(self.status(), False, message)
        record = self._record()
        changed = self._switch(release, progress, rolling_back=False)
        previous = record.current if record else None
        if previous is not None and previous.digest == release.digest:
            previous = record.previous if record else None
        self._write_record(release, previous)
        message = f"{self.environment}: release {release.version} ({release.short}) deployed"
        progress(message)
        return DeployOutcome(self.status(), changed or record is None, message)

    def rollback(self, progress: Progress = no_progress) -> DeployOutcome:
        record = self._record()
        if record is None or record.previous is None:
            raise DeploymentFailed(f"{self.environment}: no previous release to roll back to")
        target = record.previous
        progress(f"{self.environment}: rolling back to release {target.version} ({target.short})")
        self._switch(target, progress, rolling_back=True)
        self._write_record(target, record.current)
        message = f"{self.environment}: rolled back to release {target.version}"
        progress(message)
        return DeployOutcome(self.status(), True, message)

    def preflight(self, release: Release) -> None:
        """One Docker Engine has no cluster to check before a deploy."""

    def demand(self) -> None:
        """Nothing schedules the containers over agents whose capacity could be checked."""

    def close(self) -> None:
        """The Docker and HTTP clients belong to the caller, who closes them."""
