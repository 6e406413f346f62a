"""What the worker path costs on top of the work (issue 9): ``conveyor ship
--auto-approve`` started as a deployment run on a Prefect process worker (polling every
second, as the local stack's), followed by the CLI until the promote run it hands the
release to has deployed and verified production, against the same external operations
called directly through the same conveyor clients and drivers.

Both sides build a new version of the sample app, scan it, push it, tag it and attach
its evidence, then deploy and check it in integration and production. Rounds
alternate which side goes first; the figures are medians. Target: ratio <= 1.2.
Where the rest goes is read from the server's timestamps of each round's two runs:
the worker's poll (created -> Pending), the flow process's start (Pending -> its first
log line, the pull step: interpreter and prefect import; then -> Running: the flow
module loaded and the run set Running),
the run's body split into its task runs and what lies between them, and the CLI's tail
(the promote run's end -> the CLI's exit); then what a fresh interpreter pays to
import prefect and each flow module, which is most of a flow process's start.

    PATH=.venv/bin:$PATH .venv/bin/python bench/orchestration_overhead.py [--rounds 3]

Starts its own Prefect server, registry and worker on free ports of 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker
import httpx

from bench.scratch import scratch_app
from conveyor import evidence
from conveyor.clients.build_context import version_of
from conveyor.clients.docker_engine import DockerEngine
from conveyor.clients.registry import RegistryClient
from conveyor.config import Pipeline, load_pipeline
from conveyor.connections import Connections
from conveyor.probe import run_http_checks, wait_healthy
from conveyor.promotion import TagPolicy, promote
from conveyor.release import Release
from conveyor.scan_policy import enforce, scan, trivy_for
from tests.pipeline_support import (
    REPO,
    USER,
    FlowProcess,
    Stack,
    allow_auto_approve,
    pipeline_data,
    serve,
    write_pipeline,
)

SEGMENTS = (
    "CLI start -> ship created",
    "ship: worker poll (created -> Pending)",
    "ship: interpreter and prefect import (Pending -> pull step)",
    "ship: flow load and Running (pull step -> Running)",
    "ship: in task runs",
    "ship: between task runs",
    "handover: ship end -> promote Pending",
    "promote: interpreter and prefect import",
    "promote: flow load and Running",
    "promote: in task runs",
    "promote: between task runs",
    "CLI tail (promote end -> CLI exit)",
)


def direct(pipeline: Pipeline, stack: Stack, version: str) -> None:
    """The ship's external operations in order, with no orchestration around them."""
    cfg, app = pipeline.registry, pipeline.app
    ref = f"{cfg.host}/{cfg.repository}"
    client = docker.from_env(timeout=120)
    try:
        engine = DockerEngine(client)
        revision = version_of(app.context)[1]
        built = engine.build(
            context=app.context,
            dockerfile=app.dockerfile,
            tag=f"{ref}:{version}",
            build_args={"VERSION": version},
            source_version=(version, revision),
        )
        result = enforce(
            scan(
                trivy_for(pipeline.scan),
                built.id,
                pipeline.scan,
                dockerfile=app.context / app.dockerfile,
            )
        )
        digest = engine.push(built.id, ref, version, (USER, stack.password))
    finally:
        client.close()
    release = Release(
        app=app.name,
        registry=cfg.host,
        repository=cfg.repository,
        digest=digest,
        version=version,
        revision=revision,
    )
    policy = TagPolicy.from_config(cfg)
    with (
        RegistryClient.from_config(cfg, stack.password) as registry,
        httpx.Client(timeout=10) as http,
    ):
        evidence.attach_evidence(
            registry, cfg.repository, digest, "scan", {"summary": result.summary}
        )
        for env in pipeline.environments:
            for tag in (version, env.tag):
                promote(registry, cfg.repository, digest, tag, policy=policy)
            with Connections(pipeline, resolve_secret=lambda _: stack.password) as connections:
                driver = connections.driver(env)
                driver.deploy(release)
                urls = [i.url for i in driver.status().instances]
            wait_healthy(http, urls, env.health.path, timeout_s=env.health.timeout_s)
            checks = run_http_checks(http, urls[0], env.tests.http)
            assert all(c.passed for c in checks), checks
            evidence.attach_evidence(
                registry,
                cfg.repository,
                digest,
                "integration",
                {"passed": True, "environment": env.name},
            )


def import_cost(module: str) -> float:
    """Seconds a fresh interpreter takes to import ``module``: what each flow process
    (and the CLI, for prefect) pays before the run can turn Running."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, check=True, timeout=300)
    return time.perf_counter() - start


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _states(stack: Stack, run_id: str) -> dict[str, dt.datetime]:
    """The first time the run entered each state type."""
    response = stack.api.http.get("/flow_run_states/", params={"flow_run_id": run_id})
    response.raise_for_status()
    first: dict[str, dt.datetime] = {}
    for state in sorted(response.json(), key=lambda s: s["timestamp"]):
        first.setdefault(state["type"], _time(state["timestamp"]))
    return first


def _in_tasks(stack: Stack, run_id: str) -> tuple[float, int]:
    """Seconds the run spent inside task runs (their union) and how many it ran."""
    spans = sorted(
        (_time(t["start_time"]), _time(t["end_time"]))
        for t in stack.api.task_runs(run_id)
        if t["start_time"] and t["end_time"]
    )
    total, reach = 0.0, None
    for start, end in spans:
        if reach is not None and start < reach:
            start = reach
        if end > start:
            total += (end - start).total_seconds()
        reach = max(reach, end) if reach is not None else end
    return total, len(spans)


def _pull_step(stack: Stack, run_id: str) -> dt.datetime:
    """When the flow process logged its first line (the deployment's pull step): the
    interpreter has started and imported prefect; the flow module is not loaded yet."""
    logs = stack.api._post(
        "/logs/filter",
        {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 50},
    )
    return next(_time(e["timestamp"]) for e in logs if "pull step" in e["message"])


def breakdown(
    stack: Stack, cli_start: dt.datetime, cli_end: dt.datetime, ship_id: str, promote_id: str
) -> dict[str, float]:
    ship, promote = _states(stack, ship_id), _states(stack, promote_id)
    ship_created = _time(stack.api.run(ship_id)["created"])
    ship_pull, promote_pull = _pull_step(stack, ship_id), _pull_step(stack, promote_id)
    ship_tasks, _ = _in_tasks(stack, ship_id)
    promote_tasks, _ = _in_tasks(stack, promote_id)
    ship_body = (ship["COMPLETED"] - ship["RUNNING"]).total_seconds()
    promote_body = (promote["COMPLETED"] - promote["RUNNING"]).total_seconds()
    return dict(
        zip(
            SEGMENTS,
            (
                (ship_created - cli_start).total_seconds(),
                (ship["PENDING"] - ship_created).total_seconds(),
                (ship_pull - ship["PENDING"]).total_seconds(),
                (ship["RUNNING"] - ship_pull).total_seconds(),
                ship_tasks,
                ship_body - ship_tasks,
                (promote["PENDING"] - ship["COMPLETED"]).total_seconds(),
                (promote_pull - promote["PENDING"]).total_seconds(),
                (promote["RUNNING"] - promote_pull).total_seconds(),
                promote_tasks,
                promote_body - promote_tasks,
                (cli_end - promote["COMPLETED"]).total_seconds(),
            ),
            strict=True,
        )
    )


def on_worker(stack: Stack, pipeline_file: Path, version: str, log: Path) -> dict[str, float]:
    """One ``conveyor ship`` through the worker; its wall time and where it went."""
    cli_start = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    cli = FlowProcess(
        stack, ["ship", "-p", str(pipeline_file), "--auto-approve", "--version", version], log
    )
    code = cli.wait(timeout=900)
    wall = time.perf_counter() - start
    cli_end = dt.datetime.now(dt.UTC)
    if code != 0:
        raise SystemExit(f"conveyor ship {version} exited {code}: see {log}")
    ship_id = stack.api.runs_of(pipeline_file, "ship")[-1]["id"]
    promote_id = stack.api.runs_of(pipeline_file, "promote")[-1]["id"]
    return {"wall": wall, **breakdown(stack, cli_start, cli_end, ship_id, promote_id)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    with scratch_app("bench-overhead-") as (stack, app):
        serve(stack)
        data = allow_auto_approve(pipeline_data(app))
        pipeline_file = write_pipeline(stack.root / "pipeline.yaml", data)
        run(pipeline_file, stack, rounds, stack.root)


def run(pipeline_file: Path, stack: Stack, rounds: int, root: Path) -> None:
    pipeline = load_pipeline(pipeline_file)
    walls: dict[str, list[float]] = {"worker": [], "direct": []}
    parts: dict[str, list[float]] = {s: [] for s in SEGMENTS}

    def timed(side: str, n: int) -> float:
        version = f"bench-{n}-{side}"
        if side == "worker":
            measured = on_worker(stack, pipeline_file, version, root / f"ship-{n}.log")
            if n:
                for segment in SEGMENTS:
                    parts[segment].append(measured[segment])
            return measured["wall"]
        start = time.perf_counter()
        direct(pipeline, stack, version)
        return time.perf_counter() - start

    # warm-up: the worker's first poll, the build cache, trivy's checks
    print(f"warm-up worker {timed('worker', 0):6.2f} s; load {load()}", flush=True)
    print(f"warm-up direct {timed('direct', 0):6.2f} s; load {load()}", flush=True)
    for n in range(1, rounds + 1):
        order = ("worker", "direct") if n % 2 else ("direct", "worker")
        for side in order:
            walls[side].append(timed(side, n))
            print(f"round {n} {side:6s} {walls[side][-1]:6.2f} s; load {load()}", flush=True)
    on, bare = statistics.median(walls["worker"]), statistics.median(walls["direct"])
    print(f"medians over {rounds} rounds, side by side (load {load()}, {os.cpu_count()} cores):")
    print(f"  conveyor ship on the worker: {on:6.2f} s")
    print(f"  direct operations:           {bare:6.2f} s")
    print(f"  ratio worker/direct:         {on / bare:6.2f} (target <= 1.2)")
    print("where the worker side's time goes (medians):")
    for segment in SEGMENTS:
        print(f"  {segment:45s} {statistics.median(parts[segment]):6.2f} s")
    print(f"a fresh interpreter's import now (load {load()}):")
    for module in ("prefect", "flows.ship", "flows.promote"):
        print(f"  import {module:36s} {import_cost(module):6.2f} s")


if __name__ == "__main__":
    main()
