"""What every stage task shares: the retry policy and the secret resolver."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.logging import get_run_logger
from prefect.states import State
from pydantic import SecretStr

from conveyor.config import SecretRef
from conveyor.errors import SecretNotFound, is_transient

P = ParamSpec("P")
R = TypeVar("R")


def only_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry timeouts, 5xx and locks; a terminal error fails the task at once."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


def stage(
    name: str, retries: int = 3, timeout_s: float | None = None
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """Declare a pipeline step.

    No result caching: idempotency comes from asking the registry and the cluster what
    they hold, which stays true after a crash, where a result store may not.
    """

    def wrap(fn: Callable[P, R]) -> Task[P, R]:
        return task(
            name=name,
            retries=retries,
            retry_delay_seconds=[1, 4, 10],
            retry_condition_fn=only_transient,
            cache_policy=NO_CACHE,
            timeout_seconds=timeout_s,
        )(fn)

    return wrap


def resolve_secret(ref: SecretRef) -> SecretStr:
    """Read a credential from where the pipeline file says it is."""
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
    from prefect.blocks.system import Secret

    try:
        block: Secret[str] = Secret.load(str(ref.block), _sync=True)  # type: ignore[assignment, call-arg]
    except ValueError:
        raise SecretNotFound(f"{ref.describe()} does not exist") from None
    return SecretStr(str(block.get()))


def logger() -> Any:
    return get_run_logger()
