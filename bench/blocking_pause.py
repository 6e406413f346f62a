"""The old gate, for bench/durable_approval.py's comparison only: a flow that waits for
its approval with a blocking ``pause_flow_run`` (its process stays alive meanwhile),
after importing what a promote run imports."""

from __future__ import annotations

from prefect import flow
from prefect.flow_runs import pause_flow_run

import flows.promote  # noqa: F401  (a promote run's imports, so the memory compares)
from flows.approval_form import ApprovalInput


@flow(name="blocking-pause", persist_result=False)
def blocking_pause(digest: str, pipeline: str = "", environment: str = "production") -> str:
    answer = pause_flow_run(  # type: ignore[call-overload]
        wait_for_input=ApprovalInput.with_initial_data(digest=digest, environment=environment),
        timeout=3600,
        poll_interval=1,
    )
    return str(answer.decision)
