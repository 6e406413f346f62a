"""What Prefect costs on top of the work: ``ship`` (auto-approved) against the same
external operations called directly through the same conveyor clients and drivers.

Both sides build a new version of the sample app, scan it, push it, tag it and attach
its evidence, then deploy and check it in integration and production. Rounds
alternate which side goes first; the figures are medians. Target: ratio <= 1.2.

    python bench/orchestration_overhead.py [--rounds 4]

Starts its own Prefect server and registry on free ports of 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker
import httpx

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
    PASSWORD_ENV,
    USER,
    Stack,
    new_app,
    pipeline_data,
    start_stack,
    write_pipeline,
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        root = Path(tmp)
        stack = start_stack(root)
        os.environ.update(stack.env())
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        client = docker.from_env(timeout=120)
        app = new_app(stack, client, root)
        try:
            pipeline_file = write_pipeline(root / "pipeline.yaml", pipeline_data(app))
            run(pipeline_file, stack, rounds)
        finally:
            app.clean()
            client.close()
            stack.api.close()
            stack.prefect.stop()
            stack.registry.stop()


def run(pipeline_file: Path, stack: Stack, rounds: int) -> None:
    from flows.ship import ship  # after PREFECT_API_URL points at our server

    pipeline = load_pipeline(pipeline_file)
    assert os.environ[PASSWORD_ENV] == stack.password.get_secret_value()
    times: dict[str, list[float]] = {"flow": [], "direct": []}

    def timed(side: str, n: int) -> float:
        version = f"bench-{n}-{side}"
        start = time.perf_counter()
        if side == "flow":
            ship(pipeline=str(pipeline_file), auto_approve=True, version=version)
        else:
            direct(pipeline, stack, version)
        return time.perf_counter() - start

    timed("flow", 0)  # warm-up: Prefect's client, the build cache, trivy's checks
    timed("direct", 0)
    for n in range(1, rounds + 1):
        order = ("flow", "direct") if n % 2 else ("direct", "flow")
        for side in order:
            times[side].append(timed(side, n))
            print(f"round {n} {side:6s} {times[side][-1]:6.2f} s", flush=True)
    flow, bare = statistics.median(times["flow"]), statistics.median(times["direct"])
    print(f"ship flow (auto-approved) median: {flow:.2f} s over {rounds} rounds")
    print(f"direct operations median:         {bare:.2f} s")
    print(f"overhead ratio flow/direct:       {flow / bare:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
