"""Telling people about approvals through a Prefect notification block, and reminding them
through a Prefect automation (a proactive trigger: nothing happened to a suspended run
for ``remind_every``), so reminders need no process of ours while a release waits."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.automations import Automation
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.exceptions import MissingContextError

from conveyor.approvals.messages import reminder_body
from conveyor.config import NotifyConfig
from conveyor.errors import ConfigError
from tasks.runtime import logger as run_logger

# Reminders are automations with one proactive trigger each, the k-th firing k periods
# after the run suspended: Prefect fires a proactive trigger with ``after`` once per
# starting event, so one trigger cannot repeat for a run that stays suspended.
MAX_REMINDERS = 24
APPROVAL_TAG = "conveyor-approval"


def logger() -> Any:
    """The run's logger inside a flow run; the module's outside one (set-up, tests)."""
    try:
        return run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _document_id(name: str) -> UUID:
    """The block document of ``name`` ("slug/name", or a name unique among notification blocks)."""
    with get_client(sync_client=True) as client:
        docs = [
            d
            for d in client.read_block_documents()
            if (f"{d.block_type.slug}/{d.name}" if d.block_type else d.name) == name
            or d.name == name
        ]
        notifying = [
            d for d in docs if "notify" in (d.block_schema.capabilities if d.block_schema else [])
        ]
    if len(notifying) != 1:
        raise ConfigError(
            "pipeline",
            [f"approval.notify.block: {len(notifying)} notification blocks are named {name!r}"],
        )
    return notifying[0].id


def load_notifier(config: NotifyConfig) -> NotificationBlock:
    block = Block.load(_slug_name(config.block))
    if not isinstance(block, NotificationBlock):
        raise ConfigError("pipeline", [f"approval.notify.block: {config.block!r} cannot notify"])
    return block


def _slug_name(name: str) -> str:
    if "/" in name:
        return name
    with get_client(sync_client=True) as client:
        doc = client.read_block_document(_document_id(name))
    assert doc.block_type is not None
    return f"{doc.block_type.slug}/{doc.name}"


def notify(config: NotifyConfig | None, subject: str, body: str) -> None:
    """Send one notice; a notifier that fails is logged, never fails the release."""
    if config is None:
        return
    try:
        # Sync-compatible in Prefect 3: called from sync code it runs to its end.
        load_notifier(config).notify(body=body, subject=subject)  # type: ignore[unused-coroutine]
    except Exception as exc:  # the notice is a courtesy: the gate must go on without it
        logger().warning("could not notify through %s: %s", config.block, exc)


def reminder_tag(app: str, environment: str) -> str:
    """The tag a waiting run carries so that the reminders of its gate find it."""
    return f"{APPROVAL_TAG}:{app}:{environment}"


def _automation(
    app: str, environment: str, block_id: UUID, every: dt.timedelta, k: int
) -> Automation:
    return Automation(
        name=f"conveyor remind {app} {environment} #{k}",
        description=f"remind the approvers of {app} in {environment} {k} x {every} after a run suspends",
        trigger=EventTrigger(
            posture=Posture.Proactive,
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": f"prefect.tag.{reminder_tag(app, environment)}"},
            after={"prefect.flow-run.Suspended"},
            # Any later state of the run (resumed, cancelled, failed) ends its wait.
            expect={"prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            threshold=1,
            within=every * k,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject=f"reminder: {app} waits for approval for {environment}",
                body=reminder_body(app, environment),
            )
        ],
    )


def ensure_reminders(
    app: str, environment: str, config: NotifyConfig, every: dt.timedelta, timeout: dt.timedelta
) -> int:
    """Create the reminder automations of one gate where missing; returns how many exist."""
    block_id = _document_id(config.block)
    count = max(1, min(MAX_REMINDERS, int(timeout / every)))
    for k in range(1, count + 1):
        wanted = _automation(app, environment, block_id, every, k)
        try:
            Automation.read(name=wanted.name)  # type: ignore[unused-coroutine]
        except ValueError:
            wanted.create()
            logger().info("created automation %r", wanted.name)
    return count


def tag_for_reminders(run_id: str, app: str, environment: str) -> None:
    """Tag the waiting run so that its gate's reminder automations match its Suspended event."""
    tag = reminder_tag(app, environment)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
        if tag not in run.tags:
            client.update_flow_run(run.id, tags=[*run.tags, tag])
