"""How a step runs under Prefect: the task decorator with its retry policy, the run's
logger, Prefect Secret blocks as a secret source, and the flow run's connections.

The connections of a flow run are opened by the flow (``run_connections``) and found by
its tasks (``connections``) through a context variable, which Prefect copies into the
threads that run submitted tasks; a retry of a task finds the same clients again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from pydantic import SecretStr

from conveyor.config import Pipeline
from conveyor.connections import Connections, SecretResolver, secret_resolver
from conveyor.errors import SecretNotFound, is_transient

P = ParamSpec("P")
R = TypeVar("R")

_RUN: ContextVar[Connections | None] = ContextVar("conveyor_run_connections", default=None)


def only_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry timeouts, 5xx and locks; a terminal error fails the task at once."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


def pipeline_task(
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


def load_secret_block(name: str) -> SecretStr:
    """A Prefect ``Secret`` block's value, for ``{block: name}`` references."""
    from prefect.blocks.system import Secret

    try:
        block: Secret[str] = Secret.load(name, _sync=True)  # type: ignore[assignment, call-arg]
    except ValueError:
        raise SecretNotFound(f"Prefect Secret block {name!r} does not exist") from None
    return SecretStr(str(block.get()))


resolve_secret: SecretResolver = secret_resolver(load_secret_block)


@contextmanager
def run_connections(pipeline: Pipeline) -> Iterator[Connections]:
    """The flow run's connections: every task of the run shares them; closed at its end."""
    with Connections(pipeline, resolve_secret=resolve_secret) as opened:
        token = _RUN.set(opened)
        try:
            yield opened
        finally:
            _RUN.reset(token)
            _log_builds(opened)


def _log_builds(opened: Connections) -> None:
    """Say what the run built: each client once per run is the rule, and a test reads it."""
    try:
        log = get_run_logger()
    except MissingContextError:
        return
    built = ", ".join(f"{kind} {n}" for kind, n in sorted(opened.builds.items())) or "nothing"
    log.info("connections of this run: %s built", built)


@contextmanager
def connections(pipeline: Pipeline) -> Iterator[Connections]:
    """The flow run's connections to ``pipeline``; a task run outside such a flow builds
    its own and closes them when it is done."""
    current = _RUN.get()
    if current is not None and current.pipeline == pipeline:
        yield current
        return
    with Connections(pipeline, resolve_secret=resolve_secret) as own:
        yield own


def logger() -> Any:
    return get_run_logger()
