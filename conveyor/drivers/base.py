"""The deploy driver interface every target platform implements.

A driver owns one environment. Its operations are idempotent: ``deploy`` of the
release that already runs healthy changes nothing and says so, which is what lets a
crashed flow be rerun safely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from conveyor.preflight import Demand, PreflightReport
from conveyor.release import Release

Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    """The default progress sink when the caller does not listen."""


@dataclass(frozen=True)
class Instance:
    host: str
    port: int
    healthy: bool
    # Where it runs (a Mesos agent's hostname, a container id): for placement checks.
    agent: str | None = None
    # The image digest this instance runs, when the driver can tell (verification
    # checks only instances of the release it verifies).
    digest: str | None = None
    # The service it is an instance of, in a release of several services.
    member: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class DeployedState:
    """What runs now. ``digest`` is None when the environment has never been deployed."""

    environment: str
    digest: str | None
    version: str | None
    instances: tuple[Instance, ...] = ()
    previous_digest: str | None = None
    detail: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return bool(self.instances) and all(i.healthy for i in self.instances)

    def runs(self, release: Release) -> bool:
        return self.digest == release.digest and self.healthy


@dataclass(frozen=True)
class DeployOutcome:
    state: DeployedState
    changed: bool
    message: str


class DeployDriver(Protocol):
    environment: str

    def status(self) -> DeployedState:
        """What runs in the environment now."""
        ...

    def deploy(self, release: Release, progress: Progress = no_progress) -> DeployOutcome:
        """Roll ``release`` out and return once it is healthy; no-op when it already runs.

        On failure the driver restores what ran before where the platform allows and
        raises ``DeploymentFailed`` (or a ``TransientError`` worth a retry).
        """
        ...

    def rollback(self, progress: Progress = no_progress) -> DeployOutcome:
        """Return to the release that ran before the current one."""
        ...

    def plan(self, release: Release) -> str:
        """A human-readable diff of what ``deploy(release)`` would change; changes nothing."""
        ...

    def preflight(self, release: Release) -> PreflightReport | None:
        """The platform's own pre-flight for deploying ``release``; changes nothing.

        None where the platform has nothing to check (one local Docker Engine).
        """
        ...

    def demand(self) -> Demand | None:
        """What the app's instances take of a cluster's agents, for the capacity checks
        of the ground under it (vCenter); None where no cluster schedules them."""
        ...

    def close(self) -> None: ...
