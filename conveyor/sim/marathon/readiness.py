"""Readiness checks as Marathon's ReadinessBehavior runs them during a deployment.

A task launched by a deployment of an app with ``readinessChecks`` is polled once it
runs (the first check at once, then every ``intervalSeconds``) until one answer has a
status in ``httpStatusCodesForReady``; polling then stops for good. Only then does the
task count as ready, so a rolling upgrade kills no old task for it. Tasks started
outside a deployment (replacing a failed one) are not checked, as in Marathon.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from typing import Any

from conveyor.sim.marathon.state import REACHABLE_ADDRESS, Task

# Marathon answers a failed query with a made-up 504 (ReadinessCheckExecutorImpl).
QUERY_FAILED = 504
BODY_LIMIT = 64 * 1024


@dataclass
class Readiness:
    """The state of one task's readiness check (Marathon allows one per app)."""

    check: dict[str, Any]
    port: int
    ready: bool = False
    last_response: dict[str, Any] | None = None
    probed: bool = False
    in_flight: bool = False
    next_probe_at: float = 0.0

    def to_json(self, task: Task) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.check["name"],
            "taskId": task.id,
            "ready": self.ready,
        }
        if self.check.get("preserveLastResponse") and self.last_response is not None:
            body["lastResponse"] = self.last_response
        return body


def for_task(app: dict[str, Any], ports: list[int]) -> Readiness | None:
    """The readiness state of a task of ``app`` on ``ports``, or None without a check."""
    checks = app.get("readinessChecks") or []
    if not checks:
        return None
    check = checks[0]
    names = [pd.get("name") for pd in app.get("portDefinitions") or []]
    index = names.index(check["portName"])
    return Readiness(check=check, port=ports[index])


def probe(readiness: Readiness) -> dict[str, Any]:
    """One HTTP GET: the response as Marathon's ReadinessCheckHttpResponse."""
    check = readiness.check
    url = f"http://{REACHABLE_ADDRESS}:{readiness.port}{check['path']}"
    conn = http.client.HTTPConnection(
        REACHABLE_ADDRESS, readiness.port, timeout=float(check["timeoutSeconds"])
    )
    try:
        conn.request("GET", str(check["path"]), headers={"User-Agent": "marathon-sim-readiness"})
        response = conn.getresponse()
        body = response.read(BODY_LIMIT).decode(errors="replace")
        content_type = (response.getheader("Content-Type") or "").split(";")[0]
        return {"status": response.status, "contentType": content_type, "body": body}
    except (OSError, http.client.HTTPException) as exc:
        return {
            "status": QUERY_FAILED,
            "contentType": "text/plain",
            "body": f"Marathon could not query {url}: {exc}",
        }
    finally:
        conn.close()


def record(readiness: Readiness, response: dict[str, Any], now: float) -> bool:
    """Apply one answer; True when the task just became ready."""
    readiness.probed = True
    readiness.last_response = response
    if int(response["status"]) in set(readiness.check["httpStatusCodesForReady"]):
        readiness.ready = True
        return True
    readiness.next_probe_at = now + float(readiness.check["intervalSeconds"])
    return False
