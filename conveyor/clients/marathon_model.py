"""Marathon's response bodies as typed models (apps, tasks, deployments, groups).

Field names follow the API's camelCase through aliases, so ``App.version_info`` reads
``versionInfo``. Each model keeps only what conveyor reads and ignores the rest; an
app also keeps the body it was read from, because a definition sent back to Marathon
must carry every field the server holds, also the ones conveyor never looks at.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic.alias_generators import to_camel

# An app definition as JSON: Marathon's schema has dozens of optional fields and a
# template may use any of them, so definitions travel as JSON and only reads are typed.
Definition = dict[str, Any]

LABEL_DIGEST = "conveyor.digest"
LABEL_VERSION = "conveyor.version"
LABEL_REVISION = "conveyor.revision"
# The digest the app ran before this release went in: what a rollback restores.
LABEL_PREVIOUS = "conveyor.previous-digest"


class MarathonBody(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class HealthCheckResult(MarathonBody):
    alive: bool = False
    last_failure_cause: str | None = None


class IpAddress(MarathonBody):
    ip_address: str | None = None


class Task(MarathonBody):
    id: str = ""
    host: str | None = None
    state: str = ""
    version: str = ""
    ports: list[int] = Field(default_factory=list)
    ip_addresses: list[IpAddress] = Field(default_factory=list)
    health_check_results: list[HealthCheckResult] = Field(default_factory=list)


class TaskFailure(MarathonBody):
    message: str | None = None
    state: str | None = None
    task_id: str | None = None
    version: str | None = None


class VersionInfo(MarathonBody):
    last_config_change_at: str | None = None


class Docker(MarathonBody):
    image: str | None = None


class Container(MarathonBody):
    docker: Docker | None = None


class App(MarathonBody):
    """One app as ``GET /v2/apps/{id}`` (with ``embed``) or a versions lookup answers."""

    id: str = ""
    instances: int = 1
    cpus: float = 1.0
    mem: float = 128.0
    version: str = ""
    version_info: VersionInfo = Field(default_factory=VersionInfo)
    labels: dict[str, str] = Field(default_factory=dict)
    container: Container | None = None
    health_checks: list[dict[str, object]] = Field(default_factory=list)
    tasks: list[Task] = Field(default_factory=list)
    last_task_failure: TaskFailure | None = None
    _body: Definition = PrivateAttr(default_factory=dict)

    @classmethod
    def of(cls, body: object) -> App:
        if not isinstance(body, dict):
            raise TypeError(f"an app is a JSON object, not {type(body).__name__}")
        app = cls.model_validate(body)
        app._body = copy.deepcopy(body)
        return app

    def definition(self) -> Definition:
        """The body as Marathon sent it (a copy), server-computed fields included."""
        return copy.deepcopy(self._body)

    @property
    def image(self) -> str | None:
        docker = self.container.docker if self.container else None
        return docker.image if docker and docker.image else None

    @property
    def digest(self) -> str | None:
        """The release digest: conveyor's label, else the one the image is pinned to."""
        label = self.labels.get(LABEL_DIGEST)
        if label:
            return label
        image = self.image or ""
        return image.rsplit("@", 1)[1] if "@" in image else None

    @property
    def config_version(self) -> str:
        """The version of the app's last configuration change (tasks older than it go)."""
        return self.version_info.last_config_change_at or self.version


class DeploymentAction(MarathonBody):
    action: str = ""
    app: str | None = None
    pod: str | None = None


class Deployment(MarathonBody):
    id: str
    version: str = ""
    affected_apps: list[str] = Field(default_factory=list)
    current_actions: list[DeploymentAction] = Field(default_factory=list)
    current_step: int = 0
    total_steps: int = 0

    def affects(self, app_id: str) -> bool:
        return app_id in ["/" + a.strip("/") for a in self.affected_apps]


class DeploymentRef(MarathonBody):
    """What a change answers: the deployment it started and the app version it makes."""

    deployment_id: str
    version: str = ""


class Group(MarathonBody):
    id: str = ""
    version: str = ""
    apps: list[App] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list)


class AppVersions(MarathonBody):
    versions: list[str] = Field(default_factory=list)
