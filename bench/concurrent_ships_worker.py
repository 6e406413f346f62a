"""Eight concurrent ``conveyor ship --auto-approve`` of one commit through the real
stack (issue 13): a Prefect server, the deployments of prefect.yaml, one process
worker polling every second, a docker-registry with htpasswd, the Docker Engine and
trivy, all on 127.0.0.1. Each CLI starts the ship deployment and follows it and the
promote run it hands the release to until production runs it.

Measured in one run, side by side: one ship of a fresh commit (``--singles`` times,
median) against eight ships of another fresh commit started at once (wall time of the
eight, median of each). Then checked: how many of the eight exited 0, the distinct
digests they printed and the one under the version tag, the release each environment
runs (one current container, its digest, where the environment's tag points), and the
5xx answers and tracebacks in the CLI outputs, the worker's log and the server's log.

    PYTHONPATH=. .venv/bin/python bench/concurrent_ships_worker.py [--runs 8] [--singles 2]

Starts its own Prefect server and registry on free ports; keeps its folder with
``--keep`` (the logs are there).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker

from bench.scratch import running_stack
from conveyor.clients.registry import RegistryClient
from conveyor.config import load_pipeline
from tests.pipeline_support import (
    App,
    FlowProcess,
    Stack,
    allow_auto_approve,
    kept_app,
    pipeline_data,
    serve,
    write_pipeline,
)

# A release's digest as the CLI prints it (``repo@sha256:...``), not an image id.
DIGEST = re.compile(r"@(sha256:[0-9a-f]{64})")
# A Prefect server's access log line of a 5xx answer, or one in a client's error.
FIVE_XX = re.compile(r'" 5\d\d |answered 5\d\d|HTTP/1\.1 5\d\d|status code 5\d\d|: 5\d\d ')
TRACEBACK = "Traceback (most recent call last)"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ships(
    stack: Stack, pipeline: Path, logs: Path, runs: int
) -> tuple[float, list[float], list[FlowProcess]]:
    """``runs`` CLIs started at once; wall time of all and of each."""
    start = time.perf_counter()
    procs = [
        FlowProcess(stack, ["ship", "-p", str(pipeline), "--auto-approve"], logs / f"ship-{i}.log")
        for i in range(runs)
    ]
    ended: list[float] = [0.0] * runs
    waiting = set(range(runs))
    deadline = time.monotonic() + 1800
    while waiting and time.monotonic() < deadline:
        for i in list(waiting):
            if procs[i].proc.poll() is not None:
                ended[i] = time.perf_counter() - start
                waiting.discard(i)
        time.sleep(0.2)
    for i in waiting:
        procs[i].kill()
        ended[i] = time.perf_counter() - start
    return time.perf_counter() - start, ended, procs


def environments(app: App, pipeline: Path, stack: Stack) -> list[str]:
    """What each environment runs: its current containers' digests and its tag."""
    config = load_pipeline(pipeline)
    lines = []
    with RegistryClient.from_config(config.registry, stack.password) as registry:
        for env in config.environments:
            current = app.containers(env.name)
            digests = sorted({d for c in current for d in app.image_digests(c)})
            tagged = registry.resolve(app.repository, env.tag)
            lines.append(
                f"  {env.name}: {len(current)} current container(s) running {digests}; "
                f"{env.tag} -> {tagged}"
            )
    return lines


def scan_logs(paths: list[Path]) -> tuple[int, int, list[str]]:
    fives, tracebacks, examples = 0, 0, []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if FIVE_XX.search(line):
                fives += 1
                if len(examples) < 6:
                    examples.append(f"  {path.name}: {line.strip()[:200]}")
            if TRACEBACK in line:
                tracebacks += 1
                if len(examples) < 6:
                    examples.append(f"  {path.name}: {line.strip()[:200]}")
    return fives, tracebacks, examples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--singles", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-ships-"))
    try:
        with (
            running_stack(root) as stack,
            contextlib.closing(docker.from_env(timeout=120)) as client,
            kept_app(stack, client, root) as app,
        ):
            return measure(stack, app, args.runs, args.singles)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def measure(stack: Stack, app: App, runs: int, alone: int) -> int:
    """One ship ``alone`` times, then ``runs`` at once; 0 when all of those
    exited 0 with one digest."""
    root = stack.root
    worker = serve(stack)
    deadline = time.monotonic() + 120
    while b"started!" not in (root / "worker.log").read_bytes():
        if time.monotonic() > deadline or worker.proc.poll() is not None:
            raise SystemExit(f"the worker did not start: see {root / 'worker.log'}")
        time.sleep(0.5)
    pipeline = write_pipeline(root / "pipeline.yaml", allow_auto_approve(pipeline_data(app)))
    singles = []
    for n in range(alone):
        version = app.commit(f"single-{n}")
        logs = root / f"single-{n}"
        logs.mkdir()
        wall, _, procs = ships(stack, pipeline, logs, 1)
        code = procs[0].proc.returncode
        singles.append(wall)
        print(f"one ship of {version}: {wall:.1f} s, exit {code}; load {load()}", flush=True)
    version = app.commit("together")
    logs = root / "together"
    logs.mkdir()
    wall, each, procs = ships(stack, pipeline, logs, runs)
    codes = [p.proc.returncode for p in procs]
    printed = {d for p in procs for d in DIGEST.findall(p.output)}
    config = load_pipeline(pipeline)
    with RegistryClient.from_config(config.registry, stack.password) as registry:
        under_tag = registry.resolve(app.repository, version)
    print(f"{runs} concurrent ships of {version}: load after {load()}")
    print(f"  completed (exit 0): {codes.count(0)}/{runs}; exit codes {codes}")
    for i, proc in enumerate(procs):
        if proc.proc.returncode != 0:
            tail = [line for line in proc.output.splitlines() if line.strip()][-3:]
            print(f"  ship {i} ended {proc.proc.returncode}: " + " | ".join(tail)[:600])
    print(f"  distinct digests printed: {len(printed)}; under tag {version}: {under_tag}")
    print("\n".join(environments(app, pipeline, stack)))
    fives, tracebacks, examples = scan_logs(
        [*(p.log for p in procs), root / "worker.log", stack.prefect.log_path]
    )
    print(f"  5xx lines: {fives}; traceback lines: {tracebacks} (CLI outputs, worker, server)")
    print("\n".join(examples))
    print(
        f"one ship median: {statistics.median(singles):.1f} s over {len(singles)}; "
        f"{runs} at once: wall {wall:.1f} s, each median {statistics.median(each):.1f} s "
        f"(wall {wall / statistics.median(singles):.1f}x one ship) on {os.cpu_count()} cores"
    )
    return 0 if codes.count(0) == runs and len(printed) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
