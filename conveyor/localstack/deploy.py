"""What a team's Prefect server holds for conveyor: work pools, deployments, automations.

Deployments are registered with ``prefect deploy --all`` from the checkout, the command
the README gives a team: the stack then runs exactly what prefect.yaml declares (pull
step, parameters, schedules, pools) instead of a second description of it in Python.
The pools are created first (``prefect deploy`` stops at a pool that does not exist),
and the zombie automation is created when missing; each step is idempotent.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from conveyor.errors import LocalStackFailed

ZOMBIE_AUTOMATION = "conveyor: crash zombie flow runs"
# Three missed heartbeats (the worker beats every 30 s) before a run counts as dead.
ZOMBIE_AFTER = dt.timedelta(seconds=90)
DEPLOY_TIMEOUT_S = 180


@contextmanager
def prefect_client(api_url: str) -> Iterator[Any]:
    """A sync Prefect client of the server at ``api_url``, whatever the shell points at."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        yield client


def work_pools(checkout: Path) -> list[str]:
    """Every work pool prefect.yaml's deployments name, in the order they appear."""
    path = checkout / "prefect.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise LocalStackFailed(f"cannot read {path}: {exc}") from None
    pools: list[str] = []
    for deployment in data.get("deployments") or []:
        name = ((deployment or {}).get("work_pool") or {}).get("name")
        if isinstance(name, str) and name not in pools:
            pools.append(name)
    if not pools:
        raise LocalStackFailed(f"{path} names no work pool: nothing could run its deployments")
    return pools


def ensure_pools(client: Any, pools: list[str]) -> list[str]:
    """Create the process pools that do not exist yet; return those created."""
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
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            created.append(name)
        except ObjectAlreadyExists:
            continue
    return created


def register_deployments(checkout: Path, env: Mapping[str, str]) -> int:
    """``prefect deploy --all`` in ``checkout`` with ``env``; the number of deployments."""
    argv = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    try:
        done = subprocess.run(
            argv,
            cwd=checkout,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=DEPLOY_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise LocalStackFailed(f"prefect deploy --all ran over {DEPLOY_TIMEOUT_S}s") from None
    output = done.stdout + done.stderr
    count = output.count("Deployment '")
    if done.returncode != 0 or "does not exist" in output:
        tail = "\n  ".join(output.strip().splitlines()[-10:])
        raise LocalStackFailed(f"prefect deploy --all failed in {checkout}:\n  {tail}")
    return count


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
