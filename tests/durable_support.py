"""Helpers of the durable-promotion tests (issue 9) on top of tests/pipeline_support.py:
log lines with the server's timestamps, the Marathon simulator's deployment history as
its event stream tells it, evidence read back from the registry, a second Prefect
server on PostgreSQL.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conveyor.clients.registry import RegistryClient
from conveyor.evidence import Evidence, read_evidence
from tests.pipeline_support import USER, App, Stack, wait_for

ENDED = ("FAILED", "CRASHED", "COMPLETED", "CANCELLED")


def timed_logs(stack: Stack, run_id: str) -> list[tuple[dt.datetime, str]]:
    """The run's log lines (its tasks' too) with the time each was logged, in order."""
    lines: list[tuple[dt.datetime, str]] = []
    for offset in range(0, 20_000, 200):
        response = stack.api.http.post(
            "/logs/filter",
            json={
                "logs": {"flow_run_id": {"any_": [run_id]}},
                "sort": "TIMESTAMP_ASC",
                "limit": 200,
                "offset": offset,
            },
        )
        response.raise_for_status()
        page = response.json()
        lines += [(dt.datetime.fromisoformat(e["timestamp"]), e["message"]) for e in page]
        if len(page) < 200:
            break
    return lines


def logged_at(stack: Stack, run_id: str, text: str, timeout: float = 30) -> dt.datetime:
    """When the run first logged a line containing ``text`` (logs arrive in batches)."""
    return wait_for(
        f"{text!r} in the log of {run_id}",
        lambda: next((at for at, line in timed_logs(stack, run_id) if text in line), None),
        timeout,
    )


def states_of(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    """Every state the run went through, oldest first."""
    response = stack.api.http.get("/flow_run_states/", params={"flow_run_id": run_id})
    response.raise_for_status()
    return sorted(response.json(), key=lambda s: dt.datetime.fromisoformat(s["timestamp"]))


def newest_record(stack: Stack, run_id: str, app: App) -> str:
    """The text of the run's newest release record."""
    records = [a for a in stack.api.artifacts(run_id) if a["key"] == f"release-{app.name}"]
    assert records, f"run {run_id} published no release record"
    return str(max(records, key=lambda a: a["created"])["data"])


def evidence_of(stack: Stack, app: App, digest: str, kind: str) -> list[Evidence]:
    with RegistryClient(stack.registry.url, USER, stack.password) as client:
        return read_evidence(client, app.repository, digest, (kind,))


def docker_config(stack: Stack, folder: Path) -> Path:
    """A docker config with the registry's credentials, for the simulator's pulls."""
    auth = base64.b64encode(f"{USER}:{stack.password.get_secret_value()}".encode()).decode()
    path = folder / "docker-config.json"
    path.write_text(json.dumps({"auths": {stack.registry.address: {"auth": auth}}}))
    return path


@dataclass
class SimDeployment:
    """One Marathon deployment of one app, from its first event to its end."""

    id: str
    image: str
    started: dt.datetime
    ended: dt.datetime | None = None
    outcome: str = ""


@dataclass
class DeploymentHistory:
    """The deployments the Marathon simulator reports on ``/v2/events`` for one app."""

    app_id: str
    deployments: dict[str, SimDeployment] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, event: dict[str, Any]) -> None:
        kind = event.get("eventType")
        plan = event.get("plan") or {}
        at = dt.datetime.fromisoformat(str(event.get("timestamp")).replace("Z", "+00:00"))
        targets = [a for a in (plan.get("target") or {}).get("apps", []) if a["id"] == self.app_id]
        with self.lock:
            dep = self.deployments.get(str(plan.get("id")))
            if dep is None and kind == "deployment_info" and targets:
                image = targets[0]["container"]["docker"]["image"]
                self.deployments[plan["id"]] = SimDeployment(plan["id"], image, at)
            elif dep is not None and kind in ("deployment_success", "deployment_failed"):
                dep.ended, dep.outcome = at, kind.removeprefix("deployment_")

    def ordered(self) -> list[SimDeployment]:
        with self.lock:
            return sorted(self.deployments.values(), key=lambda d: d.started)


@contextlib.contextmanager
def deployment_history(url: str, app_id: str) -> Iterator[DeploymentHistory]:
    """Follow the simulator's event stream in a thread while the block runs."""
    history = DeploymentHistory(app_id)
    stop = threading.Event()
    attached = threading.Event()

    def follow() -> None:
        timeout = httpx.Timeout(10, read=20)  # the stream sends a keep-alive every 15 s
        # The stream ends when the simulator stops, after the block.
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream("GET", f"{url}/v2/events", timeout=timeout) as response,
        ):
            for line in response.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    if event["eventType"] == "event_stream_attached":
                        attached.set()
                    history.take(event)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert attached.wait(10), "the simulator's event stream did not attach"
    try:
        yield history
    finally:
        stop.set()
