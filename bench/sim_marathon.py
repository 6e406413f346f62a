"""How fast the Marathon simulator deploys and how little it costs when idle.

Measured in one run, against real containers: create (1 and 3 instances) and rolling
upgrade (3 instances) from the PUT to the deployment leaving /v2/deployments, the
scheduler's reaction (PUT -> first task staged), and the simulator's CPU use while
3 healthy tasks are probed every second. Run from the repository root:

    python -m bench.sim_marathon [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import httpx

from conveyor.sim.marathon import MarathonSim, Settings
from tests.test_sim_marathon import IMAGE, SERVE

HEALTH = [{"protocol": "HTTP", "path": "/health", "intervalSeconds": 1, "timeoutSeconds": 1,
           "gracePeriodSeconds": 5, "maxConsecutiveFailures": 3}]  # fmt: skip


def definition(instances: int, release: str) -> dict[str, Any]:
    return {
        "instances": instances, "cpus": 0.1, "mem": 32, "cmd": SERVE, "env": {"RELEASE": release},
        "container": {"type": "DOCKER", "docker": {"image": IMAGE}}, "healthChecks": HEALTH,
    }  # fmt: skip


def timed_deploy(api: httpx.Client, app_id: str, body: dict[str, Any]) -> tuple[float, float]:
    """(seconds until the deployment is gone, seconds until the first task was staged)."""
    start = time.monotonic()
    dep = api.put(f"/v2/apps{app_id}", json=body).json()["deploymentId"]
    staged = 0.0
    deadline = start + 60
    while time.monotonic() < deadline:
        if not staged and api.get(f"/v2/apps{app_id}/tasks").json()["tasks"]:
            staged = time.monotonic() - start
        if dep not in {d["id"] for d in api.get("/v2/deployments").json()}:
            return time.monotonic() - start, staged
        time.sleep(0.01)
    raise RuntimeError(f"{app_id}: deployment did not finish in 60s")


def cpu_seconds() -> float:
    times = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(times[11]) + int(times[12])) / 100.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    client = docker.from_env(timeout=60)
    client.images.get(IMAGE)  # built by tests/test_sim_marathon.py's fixture
    start = random.randrange(20000, 29000, 100)
    settings = Settings(name=f"bench{uuid.uuid4().hex[:6]}", ports=range(start, start + 100))
    results: dict[str, list[float]] = {
        "create x1": [],
        "create x3": [],
        "upgrade x3": [],
        "react": [],
    }
    with MarathonSim(settings, client) as sim, httpx.Client(base_url=sim.url, timeout=10) as api:
        for i in range(rounds):
            for n in (1, 3):
                took, staged = timed_deploy(api, f"/b{n}-{i}", definition(n, "1"))
                results[f"create x{n}"].append(took)
                results["react"].append(staged)
            took, _ = timed_deploy(api, f"/b3-{i}", definition(3, "2"))
            results["upgrade x3"].append(took)
            for n in (1, 3):
                api.delete(f"/v2/apps/b{n}-{i}")
        time.sleep(2)
        api.put("/v2/apps/idle", json=definition(3, "1"))
        time.sleep(3)
        before, wall = cpu_seconds(), time.monotonic()
        time.sleep(10)
        idle = (cpu_seconds() - before) / (time.monotonic() - wall) * 100
    for name, values in results.items():
        print(f"{name:>11}: median {statistics.median(values):.3f}s  "
              f"min {min(values):.3f}s  max {max(values):.3f}s  (n={len(values)})")  # fmt: skip
    print(f"idle CPU with 3 healthy tasks probed every 1s: {idle:.1f}% of one core")


if __name__ == "__main__":
    main()
