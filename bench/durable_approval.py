"""Approvals that hold no process: resume latency and what 20 waiting releases cost.

1. Resume -> first production task of the re-executed run: a promote run suspended at
   the production gate is answered through the API the UI calls; the latency is from
   just before that call to the start (as the API records it) of the re-executed run's
   first task that reads production. Median over 5, the worker polling every second.
   Target <= 5 s.
2. 20 releases waiting at once: flow processes alive under the worker (target 0) and
   the memory (RSS) of the worker with its children, against 20 runs waiting with the
   old blocking pause (bench/blocking_pause.py, same imports as a promote run).

    python bench/durable_approval.py [--samples 5] [--waiting 20]

Starts its own Prefect server, registry and process worker on free ports of 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker
import httpx

from tests.pipeline_support import (
    POOL,
    REPO,
    Stack,
    Worker,
    deploy_all,
    new_app,
    pipeline_data,
    start_stack,
    wait_for,
    write_pipeline,
)

ENDED = ("FAILED", "CRASHED", "COMPLETED", "CANCELLED")


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _first_production_read(stack: Stack, run_id: str, since: dt.datetime) -> dt.datetime | None:
    starts = [
        dt.datetime.fromisoformat(t["start_time"])
        for t in stack.api.task_runs(run_id)
        if t.get("start_time") and t["name"].startswith("read environment")
    ]
    later = [s for s in starts if s > since]
    return min(later) if later else None


def _start(stack: Stack, name: str, params: dict[str, object]) -> str:
    # SQLite answers 503 "database is locked" while many runs start at once: try again.
    for attempt in range(10):
        try:
            return stack.api.run_deployment(name, params)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 503 or attempt == 9:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def _waiting(stack: Stack, name: str, params: dict[str, object], n: int) -> list[str]:
    runs = []
    for _ in range(n):
        runs.append(_start(stack, name, params))
        time.sleep(0.5)
    for run in runs:
        stack.api.wait_state(run, ("PAUSED", *ENDED), timeout=600)
    return runs


def _settle(worker: Worker, seconds: float = 5) -> tuple[int, float]:
    time.sleep(seconds)
    children = worker.flow_processes()
    return len(children), _rss_mb([worker.proc.pid, *children])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--waiting", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stack = start_stack(root / "stack")
        client = docker.from_env()
        app = new_app(stack, client, root)
        worker = Worker(stack, root / "worker.log")
        try:
            deploy_all(stack, root / "deploy.log")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "--no-prompt",
                    "deploy",
                    "bench/blocking_pause.py:blocking_pause",
                    "-n",
                    "blocking",
                    "-p",
                    POOL,
                ],
                cwd=REPO,
                env=stack.env(CONVEYOR_CHECKOUT=str(REPO)),
                capture_output=True,
                timeout=300,
                check=True,
            )
            pipeline = write_pipeline(root / "pipeline.yaml", pipeline_data(app))
            ship = stack.api.run_deployment("ship/ship", {"pipeline": str(pipeline)})
            assert stack.api.wait_state(ship, ENDED, timeout=600)["type"] == "COMPLETED"
            first = stack.api.runs_of(pipeline, "promote")[-1]
            digest = first["parameters"]["digest"]
            stack.api.wait_state(first["id"], ("PAUSED", *ENDED), timeout=300)
            params = {"digest": digest, "pipeline": str(pipeline)}

            idle = _settle(worker, 2)
            runs = [first["id"], *_waiting(stack, "promote/promote", params, args.waiting - 1)]
            suspended = _settle(worker)
            latencies = []
            for run in runs[: args.samples]:
                before = dt.datetime.now(dt.UTC)
                stack.api.resume_bound(run, "approve", "alice", digest, "production", "bench")
                started = wait_for(
                    "the re-executed run's first production read",
                    lambda r=run, b=before: _first_production_read(stack, r, b),
                    120,
                    0.1,
                )
                latencies.append((started - before).total_seconds())
                print(f"resume -> first production task: {latencies[-1]:.2f} s", flush=True)
                stack.api.wait_state(run, ENDED, timeout=300)
            for run in runs[args.samples :]:
                stack.api.http.post(
                    f"/flow_runs/{run}/set_state",
                    json={"state": {"type": "CANCELLED"}, "force": True},
                )

            blocking = _waiting(stack, "blocking-pause/blocking", params, args.waiting)
            paused = _settle(worker)
            for run in blocking:
                stack.api.http.post(
                    f"/flow_runs/{run}/set_state",
                    json={"state": {"type": "CANCELLED"}, "force": True},
                )

            print()
            print(
                f"resume -> first production task, median of {len(latencies)}: "
                f"{statistics.median(latencies):.2f} s (worker polls every 1 s; target <= 5 s)"
            )
            print(f"idle worker: {idle[0]} flow processes, {idle[1]:.0f} MB")
            print(
                f"{args.waiting} waiting, suspended (promote):   {suspended[0]:3d} flow processes, "
                f"worker + children {suspended[1]:6.0f} MB"
            )
            print(
                f"{args.waiting} waiting, blocking pause (old): {paused[0]:3d} flow processes, "
                f"worker + children {paused[1]:6.0f} MB"
            )
            if suspended[1]:
                print(f"memory ratio blocking / suspended: {paused[1] / suspended[1]:.1f}x")
        finally:
            worker.stop()
            app.clean()
            stack.api.close()
            stack.prefect.stop()
            stack.registry.stop()


if __name__ == "__main__":
    main()
