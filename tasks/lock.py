"""One deploy window at a time per app and environment: a Prefect global concurrency limit.

The limit is created (one slot) when missing, so a fresh server needs no setup. It is
held from the pre-flight through verification and rollback, never while a run waits for
a person. The slot is a lease the flow renews: if the process dies, the server frees it
when the lease expires (a minute), and with the filesystem lease storage a server
restart keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from conveyor.config import EnvironmentConfig, Pipeline
from tasks.runtime import logger

LEASE_S = 60


def lock_name(pipeline: Pipeline, env: EnvironmentConfig) -> str:
    return f"conveyor-deploy-{pipeline.release_name}-{env.name}"


def ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        # Another run may create it first.
        with suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


@contextmanager
def deploy_window(pipeline: Pipeline, env: EnvironmentConfig) -> Iterator[None]:
    name = lock_name(pipeline, env)
    ensure_limit(name)
    log = logger()
    log.info("waiting for the deploy window of %s (concurrency limit %s)", env.name, name)
    with concurrency(name, occupy=1, lease_duration=LEASE_S, strict=True):
        log.info("holding the deploy window of %s", env.name)
        yield
    log.info("released the deploy window of %s", env.name)
