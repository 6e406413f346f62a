"""Approval notices through a real Prefect notification block (custom webhook) to a
receiver on 127.0.0.1, and reminders from Prefect automations on a real server."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prefect import get_client
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Suspended

from conveyor.approvals.messages import RequestFacts, decided, waiting
from conveyor.config import NotifyConfig
from tasks.notify import ensure_reminders, notify, reminder_tag
from tests.approval_support import waiting_request
from tests.pipeline_support import Stack
from tests.pipeline_support import stack as stack  # the shared session fixture

pytestmark = pytest.mark.prefect


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict[str, Any]] = []

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return list(self.received)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _save_hook(receiver: Receiver, name: str) -> None:
    """A custom webhook block ``name`` that posts each notice's subject and body to ``receiver``."""
    CustomWebhookNotificationBlock(
        name="conveyor",
        url=f"http://127.0.0.1:{receiver.server_address[1]}/hook",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        headers=None,
        cookies=None,
    ).save(name, overwrite=True)


def test_waiting_reminders_and_decision_reach_the_webhook(stack: Stack, receiver: Receiver) -> None:
    with temporary_settings({PREFECT_API_URL: stack.prefect.api_url}):
        _save_hook(receiver, "approvals-hook")
        config = NotifyConfig(block="approvals-hook")
        # Prefect's shortest proactive window is 10 s.
        every = dt.timedelta(seconds=10)
        assert ensure_reminders("shop", "production", config, every, timeout=every * 2) == 2
        assert ensure_reminders("shop", "production", config, every, timeout=every * 2) == 2
        with get_client(sync_client=True) as client:
            run = _suspended_run(client)
            facts = RequestFacts(
                app="shop",
                version="1.2.0",
                digest="sha256:" + "a" * 64,
                environment="production",
                run_id=str(run.id),
                ui_url=None,
                evidence=["scan: 0 critical"],
                progress="0 of 2: waiting for 2 approvers",
            )
            notify(config, *waiting(facts))
            first = receiver.wait_for(1, 10)
            assert first[0]["subject"] == "shop 1.2.0 waits for approval for production"
            assert f"conveyor approve {run.id} --as NAME" in first[0]["body"]
            reminders = receiver.wait_for(3, 90)[1:]
            assert len(reminders) >= 2, reminders
            assert all(
                r["subject"] == "reminder: shop waits for approval for production"
                for r in reminders
            )
            assert str(run.id) in reminders[0]["body"] and run.name in reminders[0]["body"]
            client.set_flow_run_state(run.id, Cancelled(message="superseded by 1.3.0"), force=True)
            notify(config, *decided(facts, "superseded", "superseded by 1.3.0"))
            last = receiver.wait_for(4, 10)[-1]
            assert last["subject"] == "shop 1.2.0 for production: superseded"


def _suspended_run(client: Any) -> Any:
    from prefect import flow

    @flow(name="promote")
    def promote() -> None:
        pass

    run = client.create_flow_run(promote, tags=[reminder_tag("shop", "production")])
    client.set_flow_run_state(
        run.id, Suspended(timeout_seconds=600, pause_key="approval-1"), force=True
    )
    assert client.read_flow_run(run.id).state.type == StateType.PAUSED
    return client.read_flow_run(run.id)


def test_the_approvers_of_a_superseded_release_are_told(stack: Stack, receiver: Receiver) -> None:
    from conveyor.config import EnvironmentConfig
    from tasks.ordering import _tell_superseded

    with temporary_settings({PREFECT_API_URL: stack.prefect.api_url}):
        _save_hook(receiver, "supersede-hook")
        env = EnvironmentConfig.model_validate(
            {
                "name": "production",
                "tag": "production-ready",
                "driver": {"kind": "docker", "port": 2},
                "approval": {"approvers": ["alice"], "notify": {"block": "supersede-hook"}},
            }
        )
        older = waiting_request()
        _tell_superseded(env, older, "superseded by 1.3.0 (sha256:" + "b" * 64 + ")")
        (notice,) = receiver.wait_for(1, 10)
    assert notice["subject"] == "shop 1.2.0 for production: superseded"
    assert "superseded by 1.3.0" in notice["body"] and "nothing to answer" in notice["body"]
