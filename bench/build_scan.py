"""Build and scan figures for the sample app, measured side by side in one run.

Prints medians of: a build with no cache, a cached rebuild of the same source, a
trivy image scan (secret + misconfig) with a cold and a warm layer cache, and the
Dockerfile check. Needs Docker and trivy:
``PYTHONPATH=. python bench/build_scan.py [rounds]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker

from conveyor.clients.docker_engine import DockerEngine
from conveyor.clients.trivy import Trivy

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"
VERSION = ("0.0.0-bench", None)


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main(rounds: int) -> None:
    client = docker.from_env(timeout=120)
    engine = DockerEngine(client, build_timeout_s=600)
    tag = f"conveyor-bench/hello:{uuid.uuid4().hex[:8]}"
    figures: dict[str, list[float]] = {}

    def build(nocache: bool) -> None:
        # The cache is per step: a fresh build arg value forces every step after its ARG.
        value = uuid.uuid4().hex if nocache else "fixed"
        engine.build(HELLO, Path("Dockerfile"), tag, {"VERSION": value}, source_version=VERSION)

    try:
        build(nocache=False)
        for _ in range(rounds):
            figures.setdefault("build, changed VERSION arg", []).append(_timed(lambda: build(True)))
            figures.setdefault("build, all cached", []).append(_timed(lambda: build(False)))
            with tempfile.TemporaryDirectory() as cache:
                trivy = Trivy(cache_dir=Path(cache), timeout_s=300)
                for name in ("trivy image, cold cache", "trivy image, warm cache"):
                    start = time.perf_counter()
                    trivy.scan_image(tag, ["secret", "misconfig"])
                    figures.setdefault(name, []).append(time.perf_counter() - start)
                start = time.perf_counter()
                trivy.scan_dockerfile(HELLO / "Dockerfile")
                figures.setdefault("trivy config Dockerfile", []).append(
                    time.perf_counter() - start
                )
    finally:
        engine.remove_image(tag)
        client.close()

    base = statistics.median(figures["build, all cached"])
    print(f"median of {rounds} rounds")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:28s} {median:7.2f} s   x{median / base:5.1f} of a cached build")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
