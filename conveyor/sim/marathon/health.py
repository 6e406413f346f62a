"""Real health probes against the task's port on 127.0.0.1, with Marathon's bookkeeping.

Two kinds of checks, judged as each really is (docs/health-checks.md of Marathon):
Marathon-level HTTP/TCP checks ignore ``delaySeconds`` (documented as not implemented)
and kill a task that fails *more than* ``maxConsecutiveFailures`` times, never when it
is 0 (HealthCheckActor compares the count before the new failure); Mesos-level
MESOS_HTTP/MESOS_TCP checks start after ``delaySeconds`` and kill once the count
reaches ``maxConsecutiveFailures``, so 0 kills at the first failure after grace.
"""

from __future__ import annotations

import http.client
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from conveyor.sim.marathon.model import now_iso
from conveyor.sim.marathon.state import REACHABLE_ADDRESS, HealthResult, Task


def probe_http(port: int, path: str, timeout_s: float, ignore_1xx: bool = False) -> str | None:
    """None when healthy (2xx/3xx, like Marathon), else the failure cause."""
    conn = http.client.HTTPConnection(REACHABLE_ADDRESS, port, timeout=max(timeout_s, 0.1))
    try:
        conn.request("GET", path, headers={"User-Agent": "marathon-sim-health"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    if 200 <= status < 400 or (ignore_1xx and status < 200):
        return None
    return f"Got status code {status}"


def probe_tcp(port: int, timeout_s: float) -> str | None:
    try:
        with socket.create_connection((REACHABLE_ADDRESS, port), timeout=max(timeout_s, 0.1)):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def is_mesos_level(check: dict[str, Any]) -> bool:
    return str(check.get("protocol", "HTTP")).startswith("MESOS_")


def first_probe_after(check: dict[str, Any], soonest: float) -> float:
    """Seconds from the task's start to its first probe."""
    if is_mesos_level(check):
        return max(float(check["delaySeconds"]), soonest)
    # Marathon ticks app-wide every intervalSeconds, so a new task's first probe comes at
    # the next tick: probing at once is the earliest a real Marathon could.
    return soonest


def run_probe(check: dict[str, Any], task: Task) -> str | None:
    port = check.get("port") or task.ports[int(check.get("portIndex", 0))]
    timeout = float(check["timeoutSeconds"])
    if str(check["protocol"]).endswith("TCP"):
        return probe_tcp(port, timeout)
    return probe_http(port, check.get("path") or "/", timeout, bool(check.get("ignoreHttp1xx")))


@dataclass(frozen=True)
class Verdict:
    """What one probe result means for the task."""

    changed: bool  # alive flipped (or was first set): emit health events
    kill: bool  # maxConsecutiveFailures exceeded after the grace period


def record(
    result: HealthResult, check: dict[str, Any], task: Task, cause: str | None, now: float
) -> Verdict:
    """Apply one probe outcome as Marathon does, grace period included."""
    before = result.alive
    stamp = now_iso()
    if cause is None:
        result.alive = True
        result.consecutive_failures = 0
        result.first_success = result.first_success or stamp
        result.last_success = stamp
        task.ever_healthy = True
        return Verdict(changed=before is not True, kill=False)
    in_grace = now - task.started_mono < float(check["gracePeriodSeconds"])
    if in_grace and not task.ever_healthy:
        # Marathon ignores failures until the task is healthy once or grace runs out.
        return Verdict(changed=False, kill=False)
    failures_before = result.consecutive_failures
    result.alive = False
    result.consecutive_failures += 1
    result.last_failure = stamp
    result.last_failure_cause = cause
    limit = int(check["maxConsecutiveFailures"])
    if is_mesos_level(check):
        kill = result.consecutive_failures >= limit
    else:
        kill = limit > 0 and failures_before >= limit
    return Verdict(changed=before is not False, kill=kill)


class Prober:
    """A bounded pool of probe workers so a hung app cannot stall the scheduler."""

    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-probe")

    def submit(self, fn: Any, *args: Any) -> None:
        self._pool.submit(fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
