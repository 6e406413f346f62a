"""``conveyor ship`` of a release of 1, 5 and 20 tiny services through the workstation
pipeline, as a user runs it: the CLI starts the ship deployment, a Prefect process
worker (polling every second) runs it, and the flow builds, scans and pushes every
member, records the release artifact and its evidence, then deploys the release into
integration with the docker driver (every member a container of its own) and runs the
checks there. Wall time is the CLI's, start to exit. Target: 20 services <= 2x one.

Every ship commits new content to every service, so each member is really built,
scanned and pushed (no carry), and deployed over the release the ship before left
running (the first ship of each size is a first deploy). Sizes alternate within a
round, so load drifts hit every size alike; the figures are medians. Where the time of
each run goes is read from the server's task runs (build task runs: span and mean).

``--against DIR`` runs every round on a second checkout too (an export of the code
before a change: ``git archive BASE | tar -x -C DIR``), the trees alternating within a
round, so before and after are measured side by side under the same load: for each
tree its deployments are registered and a worker started from it, and its code is
what the CLI, the worker and the flow run import (PYTHONPATH).

A second part times the build step alone (build_many.build_all: build and push, no
Prefect) of 20 services at 1, min(20, CPUs) and 2x CPUs at a time, to show what the
bound buys.

    PATH=.venv/bin:$PATH .venv/bin/python bench/ship_many.py [--runs 3] [--sizes 1,5,20]
        [--against DIR]

Starts its own Prefect server, registry (htpasswd) and worker on free ports of 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker

from conveyor.build_many import Outcome, Target, build_all, build_service, parallelism
from conveyor.cli.prefect_setup import ensure_pools, prefect_client
from conveyor.clients.docker_engine import DockerEngine
from conveyor.clients.registry import RegistryClient
from conveyor.config import ServiceConfig
from conveyor.localstack.deploy import work_pools
from conveyor.promotion import TagPolicy
from tests.parts import free_port
from tests.pipeline_support import (
    PASSWORD_ENV,
    POOL,
    REPO,
    USER,
    Stack,
    _git,
    check,
    descendants,
    start_stack,
    write_pipeline,
)

# No RUN step: a tiny image is two COPY layers, busybox serving a folder.
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY www /www
USER 65534:65534
ENV PORT=8080
CMD ["/bin/busybox", "sh", "-c", "exec /bin/busybox httpd -f -p 127.0.0.1:$PORT -h /www"]
"""


def _env(stack: Stack, tree: Path, **extra: str) -> dict[str, str]:
    """A process of ``tree``'s code: it imports conveyor, flows and tasks from there."""
    return stack.env(PYTHONPATH=str(tree), CONVEYOR_CHECKOUT=str(tree), **extra)


class TreeWorker:
    """``tree``'s deployments, and a process worker (polling every second) running its
    flows: what pipeline_support's deploy_all and Worker do, for any checkout."""

    def __init__(self, stack: Stack, tree: Path, log: Path) -> None:
        env = _env(stack, tree)
        with prefect_client(stack.prefect.api_url) as client:
            ensure_pools(client, work_pools(tree))
        with log.open("ab") as out:
            subprocess.run(
                [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
                cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300, check=True,
            )  # fmt: skip
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                cwd=tree,
                env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"},
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        """SIGKILL the worker and every flow process it started, each by its pid."""
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


def ship(stack: Stack, tree: Path, pipeline: Path, log: Path, timeout: float) -> int:
    """``conveyor ship -p pipeline`` with ``tree``'s CLI, to its end; its exit code."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from conveyor.cli.main import main; main()",
             "ship", "-p", str(pipeline)],
            cwd=tree, env=_env(stack, tree), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(10)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def sources(root: Path, n: int, page: str) -> list[Path]:
    """``n`` service contexts in one git repository, each page new; committed."""
    contexts = []
    for i in range(n):
        context = root / f"s{i}"
        (context / "www").mkdir(parents=True, exist_ok=True)
        (context / "Dockerfile").write_text(DOCKERFILE)
        if not (context / "busybox").exists():
            (context / "busybox").symlink_to("/usr/bin/busybox")
        (context / "www" / "health").write_text("ok\n")
        (context / "www" / "index.html").write_text(f"<p>s{i} {page}</p>\n")
        contexts.append(context)
    if not (root / ".git").exists():
        _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", page)
    return contexts


def pipeline_file(stack: Stack, root: Path, n: int) -> Path:
    contexts = sources(root / f"src{n}", n, "first")
    ports = [free_port() for _ in range(n)]
    integration = {
        "name": "integration",
        "tag": "integration-ready",
        "driver": {"kind": "docker", "port": ports[0]},
        "health": {"path": "/health", "timeout_s": 60, "interval_s": 0.2},
        "tests": {"http": [check("health answers", "/health", "ok")]},
    }
    data = {
        "name": f"many{n}",
        "services": [
            {"name": c.name, "context": str(c), "environments": {"integration": {"port": p}}}
            for c, p in zip(contexts, ports, strict=True)
        ],
        "registry": {
            "url": stack.registry.url,
            "repository": f"bench/many{n}",
            "username": USER,
            "password": {"env": PASSWORD_ENV},
        },
        # The sample's scanners (deployments/shop.yaml): no vulnerability DB offline.
        "scan": {"scanners": ["secret", "misconfig"], "blocking": ["CRITICAL", "HIGH"]},
        "environments": [integration],
    }
    return write_pipeline(root / f"many{n}.yaml", data)


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def breakdown(stack: Stack, pipeline: Path) -> dict[str, float]:
    """The newest ship run of ``pipeline``: its body, the build task runs' span and mean,
    and every other task run's duration (by name, summed)."""
    run = stack.api.runs_of(pipeline)[-1]
    tasks = stack.api.task_runs(run["id"])
    out = {"run body": _seconds(run["start_time"], run["end_time"])}
    builds = [t for t in tasks if t["name"].startswith("build s")]
    if builds:
        out["build span"] = _seconds(
            min(t["start_time"] for t in builds), max(t["end_time"] for t in builds)
        )
        out["build mean"] = statistics.mean(
            _seconds(t["start_time"], t["end_time"]) for t in builds
        )
    for t in tasks:
        if not t["name"].startswith("build s"):
            name = t["name"].rsplit("-", 1)[0]
            out[name] = out.get(name, 0.0) + _seconds(t["start_time"], t["end_time"])
    return out


Runs = dict[tuple[str, int], list[float]]
Parts = dict[tuple[str, int], list[dict[str, float]]]


def ships(stack: Stack, root: Path, sizes: list[int], runs: int, trees: dict[str, Path]) -> None:
    files = {n: pipeline_file(stack, root, n) for n in sizes}
    walls: Runs = {(t, n): [] for t in trees for n in sizes}
    parts: Parts = {(t, n): [] for t in trees for n in sizes}
    shipped: set[int] = set()
    for run in range(runs):
        # Each round starts with the tree the round before ended with: one switch less.
        # The checkout compared against goes first: the first deploys are its.
        order = list(reversed(trees)) if run % 2 == 0 else list(trees)
        for name in order:
            worker = TreeWorker(stack, trees[name], root / f"worker-{name}.log")
            try:
                for n in sizes:
                    if n in shipped:
                        sources(root / f"src{n}", n, f"round {run} {name}")
                    shipped.add(n)
                    _one(stack, root, trees[name], name, n, run, files[n], walls, parts)
            finally:
                worker.stop()
    for name in trees:
        _table(name, sizes, runs, walls, parts)


def _one(
    stack: Stack, root: Path, tree: Path, name: str, n: int, run: int, file: Path,
    walls: Runs, parts: Parts,
) -> None:  # fmt: skip
    log = root / f"ship-{name}-{n}-{run}.log"
    start = time.perf_counter()
    code = ship(stack, tree, file, log, 1200)
    wall = time.perf_counter() - start
    if code != 0:
        # The engine is shared: another user's image removal can take a cached
        # layer from under a build. Said, and left out of the medians.
        last = [line for line in log.read_text().splitlines() if "Failed" in line]
        print(f"  round {run} {name}: {n:2} services FAILED ({code}): {last[-1:]}", flush=True)
        return
    walls[name, n].append(wall)
    parts[name, n].append(breakdown(stack, file))
    shown = ", ".join(f"{k} {v:.1f}" for k, v in parts[name, n][-1].items() if v >= 0.5)
    print(f"  round {run} {name}: {n:2} services {wall:6.1f} s; {shown}   ({load()})", flush=True)


def _table(name: str, sizes: list[int], runs: int, walls: Runs, parts: Parts) -> None:
    done = [n for n in sizes if parts[name, n]]
    print(f"\n{name}: ship through the worker, median of {runs} (s):")
    if not done:
        return
    keys = list(dict.fromkeys(k for n in done for p in parts[name, n] for k in p))
    print(f"{'services':>9} {'wall':>7}  " + "  ".join(f"{k:>12}" for k in keys))
    for n in done:
        cells = "  ".join(
            f"{statistics.median(p.get(k, 0.0) for p in parts[name, n]):12.2f}" for k in keys
        )
        print(f"{n:>9} {statistics.median(walls[name, n]):7.2f}  {cells}")
    if walls.get((name, 1)) and walls.get((name, 20)):
        ratio = statistics.median(walls[name, 20]) / statistics.median(walls[name, 1])
        print(f"{name}: 20 services / 1 service: {ratio:.2f}x (target <= 2x)")


def builds_alone(stack: Stack, root: Path, runs: int) -> None:
    """build_many.build_all of 20 new services at several bounds (build and push only)."""
    cpus = os.cpu_count() or 1
    bounds = sorted({1, parallelism(20), 2 * cpus})
    times: dict[int, list[float]] = {b: [] for b in bounds}
    client = docker.from_env(timeout=120)
    engine = DockerEngine(client)
    registry = RegistryClient(stack.registry.url, USER, stack.password)
    host = stack.registry.address
    for run in range(runs):
        for bound in bounds:
            version = f"r{run}-{bound}"
            contexts = sources(root / "alone", 20, version)
            services = [ServiceConfig(name=c.name, context=c) for c in contexts]

            def one(s: ServiceConfig, logger: logging.Logger, version: str = version) -> Outcome:
                target = Target(
                    registry, host, f"bench/alone/{s.name}", version, None, None,
                    TagPolicy(frozenset()),
                )  # fmt: skip
                return build_service(engine, s, target, logger)

            start = time.perf_counter()
            build_all(services, one, workers=bound)
            times[bound].append(time.perf_counter() - start)
            for s in services:
                client.images.remove(f"{host}/bench/alone/{s.name}:{version}", force=True)
    registry.close()
    print(f"\nbuild and push alone of 20 services, median of {runs} (CPUs: {cpus}):")
    for bound in bounds:
        print(f"  {bound:2} at a time: {statistics.median(times[bound]):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1,5,20")
    parser.add_argument("--alone-runs", type=int, default=2, help="0: no build-alone part")
    parser.add_argument("--keep", action="store_true", help="keep the folder (logs)")
    parser.add_argument("--against", type=Path, help="a second checkout, run alternately")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    trees = {"this": REPO}
    if args.against:
        trees["against"] = args.against.resolve()
    root = Path(tempfile.mkdtemp(prefix="ship-many-"))
    print(f"CPUs: {os.cpu_count()}; {load()}; folder {root}; trees {trees}", flush=True)
    stack = start_stack(root)
    try:
        ships(stack, root, sizes, args.runs, trees)
        if args.alone_runs:
            builds_alone(stack, root, args.alone_runs)
    finally:
        _remove_containers()
        stack.api.close()
        stack.prefect.stop()
        stack.registry.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{load()}")


def _remove_containers() -> None:
    """The containers the docker driver started for the bench's releases."""
    client = docker.from_env(timeout=60)
    for c in client.containers.list(all=True):
        app: Any = c.labels.get("conveyor.app", "")
        if app.startswith("many"):
            c.remove(force=True)
    client.close()


if __name__ == "__main__":
    main()
