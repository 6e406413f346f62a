"""``conveyor ship`` of a release of 1, 5 and 20 tiny services through the workstation
pipeline, as a user runs it: the CLI starts the ship deployment, a Prefect process
worker (polling every second) runs it, and the flow builds, scans and pushes every
member, records the release artifact and its evidence, then deploys the release into
integration with the docker driver (every member a container of its own) and runs the
checks there. Wall time is the CLI's, start to exit. Target: 20 services <= 2x one.

Every round commits new content to every service, so each member is really built,
scanned and pushed (no carry), and deployed over the release the round before left
running (the first round of each size is a first deploy). Sizes alternate within a
round, so load drifts hit every size alike; the figures are medians. Where the time of
each run goes is read from the server's task runs (build task runs: span and mean).

A second part times the build step alone (build_many.build_all: build and push, no
Prefect) of 20 services at 1, min(20, CPUs) and 2x CPUs at a time, to show what the
bound buys.

    PATH=.venv/bin:$PATH .venv/bin/python bench/ship_many.py [--runs 3] [--sizes 1,5,20]

Starts its own Prefect server, registry (htpasswd) and worker on free ports of 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
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
from conveyor.clients.docker_engine import DockerEngine
from conveyor.clients.registry import RegistryClient
from conveyor.config import ServiceConfig
from conveyor.promotion import TagPolicy
from tests.parts import free_port
from tests.pipeline_support import (
    PASSWORD_ENV,
    USER,
    FlowProcess,
    Stack,
    Worker,
    _git,
    check,
    deploy_all,
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


def ships(stack: Stack, root: Path, sizes: list[int], runs: int) -> None:
    files = {n: pipeline_file(stack, root, n) for n in sizes}
    walls: dict[int, list[float]] = {n: [] for n in sizes}
    parts: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for run in range(runs):
        for n in sizes:
            if run:
                sources(root / f"src{n}", n, f"round {run}")
            log = root / f"ship-{n}-{run}.log"
            start = time.perf_counter()
            code = FlowProcess(stack, ["ship", "-p", str(files[n])], log).wait(1200)
            wall = time.perf_counter() - start
            if code != 0:
                # The engine is shared: another user's image removal can take a cached
                # layer from under a build. Said, and left out of the medians.
                last = [line for line in log.read_text().splitlines() if "Failed" in line]
                print(f"  round {run}: {n:2} services FAILED ({code}): {last[-1:]}", flush=True)
                continue
            walls[n].append(wall)
            parts[n].append(breakdown(stack, files[n]))
            shown = ", ".join(f"{k} {v:.1f}" for k, v in parts[n][-1].items() if v >= 0.5)
            print(f"  round {run}: {n:2} services {wall:6.1f} s; {shown}   ({load()})", flush=True)
    print(f"\nship through the worker, median of {runs} (s):")
    if not parts[sizes[0]]:
        return
    print(f"{'services':>9} {'wall':>7}  " + "  ".join(f"{k:>12}" for k in parts[sizes[0]][0]))
    for n in [n for n in sizes if parts[n]]:
        keys = parts[n][0].keys()
        cells = "  ".join(
            f"{statistics.median(p.get(k, 0.0) for p in parts[n]):12.2f}" for k in keys
        )
        print(f"{n:>9} {statistics.median(walls[n]):7.2f}  {cells}")
    if walls.get(1) and walls.get(20):
        ratio = statistics.median(walls[20]) / statistics.median(walls[1])
        print(f"20 services / 1 service: {ratio:.2f}x (target <= 2x)")


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
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="ship-many-"))
    print(f"CPUs: {os.cpu_count()}; {load()}; folder {root}", flush=True)
    stack = start_stack(root)
    worker: Worker | None = None
    try:
        deploy_all(stack, root / "deploy.log")
        worker = Worker(stack, root / "worker.log")
        ships(stack, root, sizes, args.runs)
        if args.alone_runs:
            builds_alone(stack, root, args.alone_runs)
    finally:
        if worker is not None:
            worker.stop()
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
