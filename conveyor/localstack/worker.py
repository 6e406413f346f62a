"""A Prefect process worker of the local stack, one per work pool prefect.yaml names.

The worker runs each flow run as a process in the checkout (prefect.yaml's pull step
sets the working directory to ``$CONVEYOR_CHECKOUT``, which the worker's environment
names), so a fresh clone works without any path written into the deployments.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from conveyor.localstack import process

PROGRAM = "prefect"
# Prefect's default is 10 s between polls: an approved release would wait that long for
# its re-execution. One poll a second is one cheap query against a local server.
QUERY_SECONDS = 1
# Prefect's minimum; the zombie automation declares a run dead after three missed beats.
HEARTBEAT_SECONDS = 30


class PrefectWorker:
    def __init__(self, state_dir: Path, pool: str, checkout: Path) -> None:
        self.pool = pool
        self.checkout = checkout
        self.pid_file = state_dir / "workers" / f"{pool}.pid"
        self.log_path = state_dir / "workers" / f"{pool}.log"
        self.home = state_dir / "workers" / "home"

    def __repr__(self) -> str:
        return f"PrefectWorker(pool={self.pool!r})"

    def ours(self) -> int | None:
        pid = process.read_pid(self.pid_file, PROGRAM)
        if pid is not None and self.pool in process.cmdline(pid):
            return pid
        return None

    def environment(self, api_url: str, extra: Mapping[str, str] = {}) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=api_url,
            PREFECT_HOME=str(self.home),
            PREFECT_WORKER_QUERY_SECONDS=str(QUERY_SECONDS),
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_SECONDS),
            PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="false",
            CONVEYOR_CHECKOUT=str(self.checkout),
        )
        env.update(extra)
        return env

    def start(self, api_url: str, extra_env: Mapping[str, str] = {}, timeout: float = 60) -> str:
        """Start the worker unless ours runs; return once it has polled its pool."""
        if self.ours() is not None:
            return "already running"
        self.home.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [sys.executable, "-m", PROGRAM, "worker", "start", "--pool", self.pool]
        argv += ["--type", "process", "--name", f"conveyor-{self.pool}-{os.getpid()}"]

        def polling() -> bool:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return b"started!" in log.read()

        return process.start_recorded(
            argv,
            log_path=self.log_path,
            pid_file=self.pid_file,
            what=f"the worker of pool {self.pool}",
            ready=polling,
            timeout=timeout,
            on_failure=self.stop,
            env=self.environment(api_url, extra_env),
        )

    def stop(self, timeout: float = 20.0) -> str:
        return process.stop_recorded(self.ours(), self.pid_file, timeout)
