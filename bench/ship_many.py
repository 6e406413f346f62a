"""Build and push of a release of 1, 5 and 20 tiny services (FROM scratch, one file),
with conveyor's bound min(services, CPUs), and for 20 services also at 1 and 2x CPUs
side by side, to show what the bound buys. Every round writes new content, so each
build really builds and each push really pushes (no engine cache hit, no carry).

    PYTHONPATH=. python bench/ship_many.py [--runs 3]

Uses the real Docker Engine and a throwaway docker-registry on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import docker

from conveyor.build_many import Outcome, Target, build_all, build_service, parallelism
from conveyor.clients.docker_engine import DockerEngine
from conveyor.clients.registry import RegistryClient
from conveyor.config import ServiceConfig
from conveyor.localstack.registry import RegistryServer
from conveyor.promotion import TagPolicy


def services(root: Path, n: int) -> list[ServiceConfig]:
    out = []
    for i in range(n):
        context = root / f"s{i}"
        context.mkdir(parents=True, exist_ok=True)
        (context / "Dockerfile").write_text("FROM scratch\nCOPY index.html /www/\n")
        (context / "index.html").write_text(secrets.token_hex(16))
        out.append(ServiceConfig(name=f"s{i}", context=context))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    cases = [(1, None), (5, None), (20, None), (20, 1), (20, 2 * cpus)]
    times: dict[tuple[int, int], list[float]] = {}
    client = docker.from_env(timeout=120)
    engine = DockerEngine(client)
    with tempfile.TemporaryDirectory() as tmp, RegistryServer(Path(tmp) / "reg") as server:
        registry = RegistryClient(server.url)
        host = server.url.split("://", 1)[1]
        for run in range(args.runs):
            for n, workers in cases:
                bound = workers or parallelism(n)
                version = f"r{run}-{n}-{bound}"

                def one(
                    s: ServiceConfig, logger: logging.Logger, version: str = version
                ) -> Outcome:
                    target = Target(
                        registry,
                        host,
                        f"bench/many/{s.name}",
                        version,
                        None,
                        None,
                        TagPolicy(frozenset()),
                        Path(tmp) / "locks",
                    )
                    return build_service(engine, s, target, logger)

                members = services(Path(tmp) / "src", n)
                start = time.perf_counter()
                build_all(members, one, workers=bound)
                times.setdefault((n, bound), []).append(time.perf_counter() - start)
                for s in members:
                    client.images.remove(f"{host}/bench/many/{s.name}:{version}", force=True)
        registry.close()
    print(f"CPUs: {cpus}, runs: {args.runs}")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for (n, bound), m in medians.items():
        print(f"{n:3} services, {bound:2} at a time: median {m:7.2f} s")
    one_service = medians[(1, 1)]
    twenty = medians[(20, parallelism(20))]
    print(f"20 services / 1 service: {twenty / one_service:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
