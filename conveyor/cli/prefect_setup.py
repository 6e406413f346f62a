"""What a team's Prefect server holds for conveyor besides its deployments: the work
pools prefect.yaml names and the zombie-run automation, each created when missing.

It lives beside the CLI because it needs Prefect's client; ``conveyor up`` hands
``prepare_server`` to the local stack, which itself never imports Prefect.
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ZOMBIE_AUTOMATION = "conveyor: crash zombie flow runs"
# Three missed heartbeats (the worker beats every 30 s) before a run counts as dead.
ZOMBIE_AFTER = dt.timedelta(seconds=90)


@contextmanager
def prefect_client(api_url: str) -> Iterator[Any]:
    """A sync Prefect client of the server at ``api_url``, whatever the shell points at."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        yield client


def engine_job_template() -> dict[str, Any]:
    """A process pool's job template whose runs start as ``python -m prefect.engine``
    with this interpreter (the one the local stack's workers run).

    Without a command, Prefect 3.9's process worker first starts its workspace
    supervisor, a Python process of its own that imports Prefect and then execs the
    engine, which imports Prefect again: that is most of the time from an approval to
    the re-executed run (bench/durable_approval.py: 5.6 s against 3.6 s, median of 5).
    The engine still runs the deployment's pull steps.
    """
    from prefect.workers.process import ProcessWorker

    template: dict[str, Any] = ProcessWorker.get_default_base_job_template()
    command = template["variables"]["properties"]["command"]
    command["default"] = f"{shlex.quote(sys.executable)} -m prefect.engine"
    return template


def ensure_pools(client: Any, pools: list[str]) -> list[str]:
    """Create the process pools that do not exist yet; return those created. A pool
    that exists is left as its owner set it up."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    created = []
    for name in pools:
        try:
            client.read_work_pool(name)
            continue
        except ObjectNotFound:
            pass
        try:
            pool = WorkPoolCreate(
                name=name, type="process", base_job_template=engine_job_template()
            )
            client.create_work_pool(pool)
            created.append(name)
        except ObjectAlreadyExists:
            continue
    return created


def zombie_automation() -> Any:
    """Prefect's documented zombie-run automation, with waiting runs left alone.

    As written in Prefect's "Detect zombie flows" guide, a run whose heartbeats stop is
    marked Crashed, and that includes a run suspended for an approval (its process
    exits on purpose) or paused: the Paused and Suspended events are expected events
    here too, so such a run is not taken for dead.
    """
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    ends = ("Completed", "Failed", "Cancelled", "Crashed", "Paused", "Suspended")
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="A flow run whose heartbeats stopped while it ran is marked Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in ends)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=ZOMBIE_AFTER,
        ),
        actions=[
            ChangeFlowRunState(
                name="Crashed",
                force=False,
                state=StateType.CRASHED,
                message=f"no heartbeat for {int(ZOMBIE_AFTER.total_seconds())} s: "
                "the flow process died (marked Crashed by conveyor's zombie automation)",
            )
        ],
    )


def ensure_zombie_automation(client: Any) -> bool:
    """Create the automation unless one of its name exists; True when created."""
    if client.read_automations_by_name(ZOMBIE_AUTOMATION):
        return False
    client.create_automation(zombie_automation())
    return True


def prepare_server(api_url: str, pools: list[str]) -> list[str]:
    """The pools (``prefect deploy`` stops at one that does not exist) and the zombie
    automation on the server at ``api_url``; one line per thing done, for ``up``."""
    with prefect_client(api_url) as client:
        created = ensure_pools(client, pools)
        zombie = ensure_zombie_automation(client)
    return [
        f"work pools: created {', '.join(created)}" if created else "work pools: already there",
        f"automation: {ZOMBIE_AUTOMATION} " + ("created" if zombie else "already there"),
    ]
