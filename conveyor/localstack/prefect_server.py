"""A Prefect server on 127.0.0.1, its database SQLite in the stack's folder or PostgreSQL."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import httpx
from pydantic import SecretStr

from conveyor.errors import LocalStackFailed
from conveyor.localstack import process

PROGRAM = "prefect"


class PrefectServer:
    def __init__(
        self,
        state_dir: Path,
        host: str = "127.0.0.1",
        port: int = 4200,
        database_url: SecretStr | None = None,
    ) -> None:
        self.home = state_dir / "prefect"
        self.database_url = database_url
        self.pid_file = state_dir / "prefect.pid"
        self.log_path = state_dir / "prefect.log"
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return f"PrefectServer(url={self.url!r})"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """What PREFECT_API_URL must say for flows to report to this server."""
        return f"{self.url}/api"

    def healthy(self, timeout: float = 3.0) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def ours(self) -> int | None:
        return process.read_pid(self.pid_file, PROGRAM)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The server must not follow a PREFECT_API_URL the caller's shell points elsewhere.
        env.pop("PREFECT_API_URL", None)
        database = self.database_url.get_secret_value() if self.database_url else None
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_DATABASE_CONNECTION_URL=database
            or f"sqlite+aiosqlite:///{self.home}/prefect.db",
            # Concurrency leases (conveyor's deploy locks) kept on disk survive a restart.
            PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect.server.concurrency.lease_storage.filesystem",
            # Expired leases (a crashed run's deploy lock) are freed within 5 s, not 15.
            PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS="5",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_API_HOST=self.host,
            PREFECT_SERVER_API_PORT=str(self.port),
        )
        return env

    def start(self, timeout: float = 180.0) -> str:
        """Start the server unless ours already answers; return once /api/health does."""
        if self.ours() is not None and self.healthy():
            return "already running"
        if importlib.util.find_spec("prefect") is None:
            raise LocalStackFailed("prefect is not installed in this Python: pip install -e .")
        if process.listening(self.host, self.port):
            raise LocalStackFailed(
                f"port {self.port} is taken by another process: "
                "pass --prefect-port (or set CONVEYOR_PREFECT_PORT) or stop it"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", PROGRAM, "server", "start"]
        argv += ["--host", self.host, "--port", str(self.port)]
        return process.start_recorded(
            argv,
            log_path=self.log_path,
            pid_file=self.pid_file,
            what=f"the Prefect server on {self.url}",
            ready=self.healthy,
            timeout=timeout,
            on_failure=self.stop,
            env=self.environment(),
        )

    def stop(self, timeout: float = 20.0) -> str:
        return process.stop_recorded(self.ours(), self.pid_file, timeout)
