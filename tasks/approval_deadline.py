"""Who records a deadline that passed while no process existed.

When nobody answers in time, Prefect's pause-expiry service (not our code) fails the
suspended run ("The flow was paused and never resumed."), so nothing of ours runs to
say so. This automation, installed per promote deployment when a run first waits,
reschedules such a run with ``EXPIRED_MESSAGE``; the worker executes it again, the gate
finds its stored deadline passed, records the timeout as a rejection in the approval
evidence and the release record, and ends the run Failed saying why. It lives on the
server, so it works for every worker and survives any of them.
"""

from __future__ import annotations

import datetime as dt

from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from conveyor.approvals.waiting import EXPIRED_MESSAGE

PAUSE_EXPIRED = "The flow was paused and never resumed."


def automation_name(deployment_id: str) -> str:
    return f"conveyor: record approval timeouts of deployment {deployment_id}"


def ensure_deadline_automation(deployment_id: str) -> None:
    name = automation_name(deployment_id)
    with get_client(sync_client=True) as client:
        if client.read_automations_by_name(name):
            return
        client.create_automation(
            AutomationCore(
                name=name,
                description="A promote run failed by Prefect for an expired approval is "
                "executed once more, so it records the timeout as a rejection.",
                trigger=EventTrigger(
                    expect={"prefect.flow-run.Failed"},
                    # Only the server's expiry: our own failures must not loop back here.
                    match={
                        "prefect.resource.id": "prefect.flow-run.*",
                        "prefect.state-message": PAUSE_EXPIRED,
                    },
                    match_related={
                        "prefect.resource.id": f"prefect.deployment.{deployment_id}",
                        "prefect.resource.role": "deployment",
                    },
                    posture=Posture.Reactive,
                    threshold=1,
                    within=dt.timedelta(0),
                ),
                actions=[
                    ChangeFlowRunState(
                        name=None, state=StateType.SCHEDULED, message=EXPIRED_MESSAGE, force=True
                    )
                ],
            )
        )
