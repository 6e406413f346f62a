"""The docker driver's deploy cost and the app's unavailability during a cut-over.

Builds the sample app (two versions) FROM scratch, pushes it to a throwaway local
registry and upgrades back and forth ``--runs`` times while a thread polls /health
every 10 ms. Prints medians of the deploy phases and of the longest window in which
/health did not answer 200 (the cut-over gap the candidate phase cannot remove).

    python bench/docker_cutover.py [--runs 5]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import docker
import httpx
from pydantic import SecretStr

from conveyor.config.drivers import DockerDriverConfig
from conveyor.config.environment import HealthConfig
from conveyor.drivers.docker import DockerDriver
from conveyor.localstack.registry import RegistryServer
from conveyor.release import Release
from tests.background import Background
from tests.parts import free_port
from tests.test_docker_driver import _build_and_push, _context


class GapMeter(Background):
    """Polls a URL and records the longest run of failed polls."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.longest = 0.0

    def _run(self) -> None:
        down_since: float | None = None
        with httpx.Client(timeout=1.0) as client:
            while not self._stop.is_set():
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                now = time.monotonic()
                if ok and down_since is not None:
                    self.longest = max(self.longest, now - down_since)
                    down_since = None
                elif not ok and down_since is None:
                    down_since = now
                time.sleep(0.01)


def _ship(
    client: docker.DockerClient, reg: RegistryServer, auth: dict[str, str], app: str
) -> dict[str, Release]:
    return {v: _build_and_push(client, reg, auth, app, v, _context(), {}) for v in ("1.0", "2.0")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    client = docker.from_env(timeout=120)
    password = secrets.token_urlsafe(16)
    auth = {"username": "conveyor", "password": password}
    app, port = "b" + secrets.token_hex(4), free_port()
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=5) as http:
        reg = RegistryServer(
            Path(tmp), port=free_port(), htpasswd=("conveyor", SecretStr(password))
        ).start(60)
        try:
            releases = _ship(client, reg, auth, app)
            driver = DockerDriver(
                "bench",
                DockerDriverConfig(kind="docker", port=port),
                client,
                app,
                "PORT",
                HealthConfig(interval_s=0.05),
                http,
                auth,
            )
            started = time.monotonic()
            driver.deploy(releases["1.0"])
            first = time.monotonic() - started
            upgrades, gaps, noops = [], [], []
            for i in range(args.runs):
                target = releases["2.0" if i % 2 == 0 else "1.0"]
                with GapMeter(f"http://127.0.0.1:{port}/health") as meter:
                    started = time.monotonic()
                    driver.deploy(target)
                    upgrades.append(time.monotonic() - started)
                gaps.append(meter.longest)
                started = time.monotonic()
                driver.deploy(target)
                noops.append(time.monotonic() - started)
        finally:
            for c in client.containers.list(all=True, filters={"label": f"conveyor.app={app}"}):
                c.remove(force=True)
            for image in client.images.list(filters={"label": f"conveyor.test={app}"}):
                client.images.remove(image.id, force=True)
            reg.stop()
    print(f"first deploy (pull, candidate, start):   {first:.2f} s")
    print(f"upgrade, median of {args.runs}:                {statistics.median(upgrades):.2f} s")
    print(
        f"unavailable during cut-over, median:     {statistics.median(gaps) * 1000:.0f} ms"
        f" (max {max(gaps) * 1000:.0f} ms)"
    )
    print(f"idempotent redeploy (no change), median: {statistics.median(noops) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
