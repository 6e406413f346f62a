"""One deployment target and the gates around it."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, model_validator

from conveyor.config.approval import ApprovalConfig, FreezeWindow
from conveyor.config.base import StrictModel
from conveyor.config.drivers import DockerDriverConfig, MarathonDriverConfig
from conveyor.config.preflight import PreflightConfig


class HealthConfig(StrictModel):
    path: str = Field(default="/health", pattern=r"^/")
    expect_status: int = 200
    timeout_s: float = Field(default=60, gt=0)
    interval_s: float = Field(default=0.5, gt=0)


class HttpCheck(StrictModel):
    name: str
    path: str = Field(pattern=r"^/")
    expect_status: int = 200
    expect_body_contains: str | None = None


class TestsConfig(StrictModel):
    http: list[HttpCheck] = Field(default_factory=list)
    # Run with CONVEYOR_APP_URL (and CONVEYOR_APP_URLS) in its environment.
    command: list[str] | None = None
    command_timeout_s: float = Field(default=300, gt=0)


class RunsOn(StrictModel):
    """Where this environment's promote run executes: a worker that reaches its cluster."""

    work_pool: str = Field(default="conveyor", min_length=1)
    work_queue: str | None = None
    # The deployment of the ``promote`` flow on that pool (prefect.yaml declares it).
    deployment: str = Field(default="promote", min_length=1)


class EnvironmentConfig(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    # The moving tag this environment's releases carry (set before deploying here).
    tag: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    driver: DockerDriverConfig | MarathonDriverConfig = Field(discriminator="kind")
    health: HealthConfig = Field(default_factory=HealthConfig)
    tests: TestsConfig = Field(default_factory=TestsConfig)
    # A person must approve before a release enters this environment.
    approval: ApprovalConfig | None = None
    # Times nothing is promoted here unless by a break-glass promotion.
    freeze: list[FreezeWindow] = Field(default_factory=list)
    preflight: PreflightConfig = Field(default_factory=PreflightConfig)
    # Return to the previous release when verification fails after a change.
    rollback_on_failure: bool = True
    runs_on: RunsOn = Field(default_factory=RunsOn)

    @model_validator(mode="after")
    def _approval_has_timeout(self) -> EnvironmentConfig:
        if self.approval is not None and self.approval.timeout <= dt.timedelta(0):
            raise ValueError("approval.timeout must be positive")
        return self
