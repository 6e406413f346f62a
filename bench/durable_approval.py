"""Approvals that hold no process: resume latency and what 20 waiting releases cost.

1. Resume -> first production task of the re-executed run: a promote run suspended at
   the production gate is answered through the API the UI calls; the latency is from
   just before that call to the start (as the API records it) of the re-executed run's
   first task that reads production. Median over 5, the worker polling every second.
   Target <= 5 s. Measured side by side, one sample of each in turn: prefect.yaml's
   promote deployment, which Prefect 3.9's process worker starts through its workspace
   supervisor, and the same flow deployed with the job's command given, which it
   starts as ``python -m prefect.engine`` directly; each sample also prints its phases
   (worker poll, process start and imports, flow body to the first production read).
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.scratch import scratch_app
from tests.pipeline_support import (
    POOL,
    REPO,
    Stack,
    Worker,
    pipeline_data,
    serve,
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


def _phases(stack: Stack, run_id: str, since: dt.datetime) -> dict[str, float]:
    """Where the resume latency went, from the server's state and task-run times."""
    response = stack.api.http.get("/flow_run_states/", params={"flow_run_id": run_id})
    states = sorted((dt.datetime.fromisoformat(s["timestamp"]), s["type"]) for s in response.json())
    first: dict[str, dt.datetime] = {}
    for at, kind in states:
        if at > since:
            first.setdefault(kind, at)
    tasks = sorted(
        dt.datetime.fromisoformat(t["start_time"])
        for t in stack.api.task_runs(run_id)
        if t.get("start_time") and dt.datetime.fromisoformat(t["start_time"]) > since
    )
    read = _first_production_read(stack, run_id, since)
    marks = [since, first.get("PENDING"), first.get("RUNNING"), tasks[0] if tasks else None, read]
    names = ["resume -> Pending (worker poll)", "Pending -> Running (process, imports)",
             "Running -> first task", "first task -> production read"]  # fmt: skip
    return {
        name: (b - a).total_seconds()
        for name, a, b in zip(names, marks, marks[1:], strict=False)
        if a is not None and b is not None
    }


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


def _deploy(stack: Stack, entrypoint: str, name: str, *extra: str) -> None:
    """One more deployment of ``entrypoint`` on the pool, beside prefect.yaml's."""
    subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", entrypoint, "-n", name,
         "-p", POOL, *extra],
        cwd=REPO,
        env=stack.env(CONVEYOR_CHECKOUT=str(REPO)),
        capture_output=True,
        timeout=300,
        check=True,
    )  # fmt: skip


def _sample(stack: Stack, run: str, digest: str) -> tuple[float, dict[str, float]]:
    """Answer one waiting run; the latency to its first production read, and its phases."""
    before = dt.datetime.now(dt.UTC)
    stack.api.resume_bound(run, "approve", "alice", digest, "production", "bench")
    started = wait_for(
        "the re-executed run's first production read",
        lambda: _first_production_read(stack, run, before),
        120,
        0.1,
    )
    stack.api.wait_state(run, ENDED, timeout=300)
    return (started - before).total_seconds(), _phases(stack, run, before)


def _cancel(stack: Stack, runs: list[str]) -> None:
    for run in runs:
        stack.api.http.post(
            f"/flow_runs/{run}/set_state", json={"state": {"type": "CANCELLED"}, "force": True}
        )


def _report(name: str, samples: list[tuple[float, dict[str, float]]]) -> None:
    print(
        f"{name}: resume -> first production task, median of {len(samples)}: "
        f"{statistics.median(s[0] for s in samples):.2f} s (worker polls every 1 s; target <= 5 s)"
    )
    for phase in samples[0][1] if samples else {}:
        values = [s[1][phase] for s in samples if phase in s[1]]
        print(f"  median {phase}: {statistics.median(values):.2f} s")


def _alternate(
    stack: Stack, supervised: list[str], direct: list[str], digest: str
) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """One sample of each launcher in turn, so both see the same load."""
    by_launcher: dict[str, list[tuple[float, dict[str, float]]]] = {
        "prefect.yaml's promote (workspace supervisor)": [],
        "promote-engine (command given)": [],
    }
    for pair in zip(supervised, direct, strict=True):
        for (name, samples), run in zip(by_launcher.items(), pair, strict=True):
            samples.append(_sample(stack, run, digest))
            print(f"{name}: {samples[-1][0]:.2f} s; {samples[-1][1]}", flush=True)
    return by_launcher


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--waiting", type=int, default=20)
    args = parser.parse_args()
    with scratch_app("bench-durable-") as (stack, app):
        worker = serve(stack)
        _deploy(stack, "bench/blocking_pause.py:blocking_pause", "blocking")
        # The same flow with the job's command given: Prefect 3.9's process worker
        # then starts `python -m prefect.engine` at once, instead of its workspace
        # supervisor (a Python process of its own that imports Prefect, prepares the
        # workspace and execs the engine, which imports Prefect again).
        engine = f"command={sys.executable} -m prefect.engine"
        _deploy(stack, "flows/promote.py:promote", "promote-engine", "-jv", engine)
        pipeline = write_pipeline(stack.root / "pipeline.yaml", pipeline_data(app))
        ship = stack.api.run_deployment("ship/ship", {"pipeline": str(pipeline)})
        assert stack.api.wait_state(ship, ENDED, timeout=600)["type"] == "COMPLETED"
        first = stack.api.runs_of(pipeline, "promote")[-1]
        digest = first["parameters"]["digest"]
        stack.api.wait_state(first["id"], ("PAUSED", *ENDED), timeout=300)
        params = {"digest": digest, "pipeline": str(pipeline)}

        idle = _settle(worker, 2)
        runs = [first["id"], *_waiting(stack, "promote/promote", params, args.waiting - 1)]
        suspended = _settle(worker)
        direct = _waiting(stack, "promote/promote-engine", params, args.samples)
        by_launcher = _alternate(stack, runs[: args.samples], direct, digest)
        _cancel(stack, runs[args.samples :])

        blocking = _waiting(stack, "blocking-pause/blocking", params, args.waiting)
        paused = _settle(worker)
        _cancel(stack, blocking)

        print()
        for name, samples in by_launcher.items():
            _report(name, samples)
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


if __name__ == "__main__":
    main()
