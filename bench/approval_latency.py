"""How long a person waits between answering an approval and the run moving on.

One ``ship`` of the sample app through integration and then several environments
that each pause for approval; each pause is answered through the API the UI calls
(``POST /api/flow_runs/{id}/resume``). The latency is from just before that call to
the start time, as the API records it, of the first task run after it. Target:
median <= 1 s.

    python bench/approval_latency.py [--gates 5]

Starts its own Prefect server and registry on free ports of 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import scratch_app
from tests.pipeline_support import (
    App,
    FlowProcess,
    Stack,
    environment,
    pipeline_data,
    wait_for,
    write_pipeline,
)


def _first_task_after(stack: Stack, run_id: str, since: dt.datetime) -> dt.datetime | None:
    starts = [
        dt.datetime.fromisoformat(t["start_time"])
        for t in stack.api.task_runs(run_id)
        if t.get("start_time")
    ]
    later = [s for s in starts if s > since]
    return min(later) if later else None


def measure(stack: Stack, app: App, root: Path, gates: int) -> list[float]:
    data = pipeline_data(app)
    data["environments"] += [
        environment(
            f"stage-{n}", f"stage-{n}-ready", data["environments"][1]["tests"]["http"], "10m"
        )
        for n in range(2, gates + 1)
    ]
    pipeline = write_pipeline(root / "pipeline.yaml", data)
    flow = FlowProcess(stack, ["ship", "-p", str(pipeline)], root / "ship.log")
    latencies: list[float] = []
    try:
        run_id = stack.api.wait_run(pipeline, timeout=120)
        for env in data["environments"][1:]:
            stack.api.wait_state_key(run_id, f"approval-{env['name']}-1", timeout=150)
            before = dt.datetime.now(dt.UTC)
            stack.api.resume(run_id, "approve", "alice", "bench")
            started = wait_for(
                f"the task after the approval of {env['name']}",
                partial(_first_task_after, stack, run_id, before),
                timeout=30,
                interval=0.05,
            )
            latencies.append((started - before).total_seconds())
            print(f"{env['name']:12s} resume -> next task start: {latencies[-1]:.3f} s", flush=True)
        code = flow.wait(180)
        if code != 0:
            raise SystemExit(f"the ship run failed:\n{flow.output[-3000:]}")
    finally:
        flow.kill()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gates", type=int, default=5)
    gates = parser.parse_args().gates
    with scratch_app("bench-approval-") as (stack, app):
        started = time.monotonic()
        latencies = measure(stack, app, stack.root, gates)
        print(
            f"approval -> next task start, median over {len(latencies)} pauses: "
            f"{statistics.median(latencies):.3f} s (max {max(latencies):.3f} s; target <= 1 s); "
            f"whole run {time.monotonic() - started:.0f} s"
        )


if __name__ == "__main__":
    main()
