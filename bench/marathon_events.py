"""How soon the Marathon driver notices a finished rollout: event stream vs polling.

Measured per deploy: from the moment the simulator marked the last new instance
healthy (its ``firstSuccess`` timestamp) to the moment ``deploy`` returned, i.e. when
the flow's next task would start. Both modes run side by side, interleaved, against one
simulator with real containers. That time splits into the simulator's part (last instance
healthy -> its ``deployment_success``: killing the last old task) and the driver's part.
While each rollout runs, a sampler GETs the app as a UI would, to show whether the API
stays responsive. Run from the repository root:

    python -m bench.marathon_events [--rounds 5] [--instances 4]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import httpx

from conveyor.config.drivers import MarathonDriverConfig
from conveyor.drivers.marathon import MarathonDriver
from conveyor.localstack.registry import RegistryServer
from conveyor.release import Release
from tests.background import Background
from tests.marathon_support import Sim, build_and_push, fast_template, run_sim
from tests.parts import free_port


def _parse(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def last_healthy_at(sim: Sim, app_id: str) -> float:
    """When the simulator marked the newest version's last instance healthy (wall clock)."""
    app = sim.state()["apps"][app_id]
    tasks = [t for t in app["tasks"] if t.get("version") == app["version"]]
    marks = [
        h["firstSuccess"]
        for t in tasks
        for h in t.get("healthCheckResults") or []
        if h.get("firstSuccess")
    ]
    if len(marks) < len(tasks) or not marks:
        raise RuntimeError(f"{app_id}: not every new task has passed a health check")
    return max(_parse(m) for m in marks)


class DeploymentLog:
    """The simulator's own ``deployment_success`` times, read from its event stream."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done: list[tuple[float, str]] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        headers = {"Accept": "text/event-stream"}
        with httpx.stream("GET", self.url + "/v2/events", headers=headers, timeout=None) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and '"deployment_success"' in line:
                    data = json.loads(line[5:])
                    self.done.append((_parse(data["timestamp"]), json.dumps(data)))

    def finished_at(self, app_id: str) -> float:
        for _ in range(50):
            found = [ts for ts, text in self.done if f'"{app_id}"' in text]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise RuntimeError(f"no deployment_success event for {app_id}")


class ApiSampler(Background):
    """GETs an app with its tasks every ``every_s`` while a rollout runs; keeps each latency."""

    MAX_SAMPLES = 2000  # a bound on requests even if a rollout never ends

    def __init__(self, url: str, app_id: str, every_s: float = 0.05) -> None:
        super().__init__()
        self.url, self.app_id, self.every_s = url, app_id, every_s
        self.latencies: list[float] = []

    def _run(self) -> None:
        params = {"embed": "app.tasks"}
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.is_set() and len(self.latencies) < self.MAX_SAMPLES:
                start = time.perf_counter()
                http.get(f"/v2/apps{self.app_id}", params=params)
                self.latencies.append(time.perf_counter() - start)
                self._stop.wait(self.every_s)


def one_deploy(
    driver: MarathonDriver, sim: Sim, log: DeploymentLog, release: Release, gets: list[float]
) -> tuple[float, float]:
    """(last instance healthy -> returned, deployment finished in the sim -> returned)."""
    with ApiSampler(sim.url, driver.app_id) as sampler:
        outcome = driver.deploy(release)
        returned = time.time()
    gets.extend(sampler.latencies)
    if not outcome.changed:
        raise RuntimeError("the bench needs a real rollout each round")
    return returned - last_healthy_at(sim, driver.app_id), returned - log.finished_at(driver.app_id)


def make_driver(sim: Sim, template: Path, events: bool) -> MarathonDriver:
    config = MarathonDriverConfig(
        kind="marathon",
        url=sim.url,
        app_id=f"/bench-{'events' if events else 'poll'}-{secrets.token_hex(2)}",
        app_template=template,
        deploy_timeout_s=120,
        event_stream=events,
    )
    return MarathonDriver("bench", config)


def _all(values: list[float]) -> str:
    return ", ".join(f"{x:.3f}" for x in values)


def report(
    rounds: int,
    instances: int,
    seen: dict[bool, list[float]],
    after_sim: dict[bool, list[float]],
    gets: list[float],
) -> None:
    ev, poll = statistics.median(seen[True]), statistics.median(seen[False])
    sim_part = [
        a - b for mode in (True, False) for a, b in zip(seen[mode], after_sim[mode], strict=True)
    ]
    print(f"rounds per mode: {rounds} (rolling upgrades of {instances} instances, real containers)")
    print(f"event stream: median {ev:.3f} s  (all: {_all(seen[True])})")
    print(f"polling     : median {poll:.3f} s  (all: {_all(seen[False])})")
    print(
        "of which the simulator (last healthy -> deployment_success): "
        f"median {statistics.median(sim_part):.3f} s"
    )
    print(
        "after the simulator finished the deployment: "
        f"events median {statistics.median(after_sim[True]):.3f} s, "
        f"polling median {statistics.median(after_sim[False]):.3f} s"
    )
    gets_ms = sorted(x * 1000 for x in gets)
    print(
        f"API GET /v2/apps/{{id}}?embed=app.tasks during rollouts: {len(gets_ms)} requests, "
        f"median {statistics.median(gets_ms):.1f} ms, "
        f"p99 {gets_ms[int(len(gets_ms) * 0.99)]:.1f} ms, max {gets_ms[-1]:.1f} ms"
    )
    print(
        f"polling / events: {poll / ev:.1f}x; target with events <= 0.5 s: "
        f"{'met' if ev <= 0.5 else 'NOT met'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    # One new instance at a time: a longer rollout, as real ones are, lets polling back off.
    parser.add_argument("--instances", type=int, default=4)
    args = parser.parse_args()
    rounds, instances = args.rounds, args.instances
    client = docker.from_env(timeout=120)
    with tempfile.TemporaryDirectory() as tmp:
        reg = RegistryServer(Path(tmp) / "registry", port=free_port()).start(timeout=60)
        app = "b" + secrets.token_hex(3)
        try:
            images = [build_and_push(client, reg, app, v) for v in ("1.0", "2.0")]
            with run_sim(client) as sim:
                strategy = {"minimumHealthCapacity": 1, "maximumOverCapacity": 1 / instances}
                template = fast_template(Path(tmp), instances=instances, upgradeStrategy=strategy)
                drivers = {mode: make_driver(sim, template, events=mode) for mode in (True, False)}
                log = DeploymentLog(sim.url)
                seen: dict[bool, list[float]] = {True: [], False: []}
                after_sim: dict[bool, list[float]] = {True: [], False: []}
                gets: list[float] = []
                for i in range(rounds + 1):
                    for mode, driver in drivers.items():
                        latency, reaction = one_deploy(driver, sim, log, images[i % 2], gets)
                        if i > 0:  # the first round creates the apps: not an upgrade
                            seen[mode].append(latency)
                            after_sim[mode].append(reaction)
                for driver in drivers.values():
                    driver.close()
        finally:
            for image in client.images.list(name=f"{reg.address}/conveyor/{app}"):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(image.id, force=True)
            reg.stop()
    report(rounds, instances, seen, after_sim, gets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
