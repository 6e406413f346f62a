"""How fast the Marathon simulator comes back when it has 50 apps of 2 instances to adopt.

Measured in one run, as ``conveyor up`` starts it (``python -m conveyor.sim.marathon
--state-dir``): seconds from spawning the process to every app listed with both tasks
healthy and no deployment, against a start from an empty state folder (spawn to the API
answering), rounds alternating side by side. The 100 containers are launched once, by
the first simulator; that deploy from nothing is printed too. Target: adoption <= 5 s.
Run from the repository root (the image comes from tests/test_sim_marathon.py)::

    python -m bench.sim_marathon_restart [--rounds 5] [--apps 50]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx

from tests.parts import free_port
from tests.test_sim_marathon import IMAGE, SERVE

ROOT = Path(__file__).resolve().parent.parent
HEALTH = [{"protocol": "HTTP", "path": "/health", "intervalSeconds": 1, "timeoutSeconds": 1,
           "gracePeriodSeconds": 10, "maxConsecutiveFailures": 3}]  # fmt: skip
BODY = {"instances": 2, "cpus": 0.01, "mem": 32, "cmd": SERVE, "healthChecks": HEALTH,
        "container": {"type": "DOCKER", "docker": {"image": IMAGE}}}  # fmt: skip


class Sim:
    """One simulator process on a state folder."""

    def __init__(self, name: str, state: Path, ports: range) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        argv = [
            sys.executable, "-m", "conveyor.sim.marathon", "--listen", self.url[7:],
            "--name", name, "--agents", "2", "--ports", f"{ports.start}-{ports.stop - 1}",
            "--state-dir", str(state),
        ]  # fmt: skip
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip

    def until(self, ready: Callable[[httpx.Client], bool], timeout: float) -> float:
        """Seconds from spawn until ``ready``; polls every 20 ms, bounded by ``timeout``."""
        with httpx.Client(base_url=self.url, timeout=5) as api:
            while time.monotonic() - self.started < timeout:
                try:
                    if ready(api):
                        return time.monotonic() - self.started
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"simulator at {self.url} not ready within {timeout}s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def answers(api: httpx.Client) -> bool:
    return api.get("/ping").status_code == 200


def all_healthy(apps: int) -> Callable[[httpx.Client], bool]:
    def ready(api: httpx.Client) -> bool:
        listed: list[dict[str, Any]] = api.get("/v2/apps").json()["apps"]
        return len(listed) == apps and all(
            a["tasksHealthy"] == a["instances"] and not a["deployments"] for a in listed
        )

    return ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--apps", type=int, default=50)
    args = parser.parse_args()
    client = docker.from_env(timeout=60)
    client.images.get(IMAGE)  # built by tests/test_sim_marathon.py's fixture
    low = random.randrange(20000, 28000, 100)
    ports = range(low, low + 4 * args.apps)
    name = f"bench{uuid.uuid4().hex[:6]}"
    adopt: list[float] = []
    empty: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "adopt"
        try:
            sim = Sim(name, state, ports)
            sim.until(answers, 30)
            with httpx.Client(base_url=sim.url, timeout=10) as api:
                for i in range(args.apps):
                    api.put(f"/v2/apps/bench/app-{i}", json=BODY).raise_for_status()
            deployed = sim.until(all_healthy(args.apps), 600)
            sim.stop()
            for i in range(args.rounds):
                fresh = Sim(f"{name}e{i}", Path(tmp) / f"empty-{i}", ports)
                empty.append(fresh.until(answers, 30))
                fresh.stop()
                again = Sim(name, state, ports)
                adopt.append(again.until(all_healthy(args.apps), 60))
                again.stop()
        finally:
            for c in client.containers.list(all=True, filters={"label": "conveyor.sim=marathon"}):
                if c.labels.get("conveyor.sim.instance", "").startswith(name):
                    c.remove(force=True)
    n = args.apps
    print(f"deploy from nothing, {n} apps x 2 to healthy: {deployed:.2f}s (once)")
    print(f"start, empty state folder (to API answering): median {statistics.median(empty):.3f}s"
          f"  min {min(empty):.3f}s  max {max(empty):.3f}s  (n={len(empty)})")  # fmt: skip
    print(f"start adopting {n} apps x 2 (to all healthy):  median {statistics.median(adopt):.3f}s"
          f"  min {min(adopt):.3f}s  max {max(adopt):.3f}s  (n={len(adopt)})")  # fmt: skip
    print(f"adopting / empty: {statistics.median(adopt) / statistics.median(empty):.1f}x")


if __name__ == "__main__":
    main()
