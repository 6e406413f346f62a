"""The Docker Engine of the local stack: used when one answers, started when none does.

``conveyor down`` stops only a daemon that ``conveyor up`` started (its pid file says
so): a Docker Engine the machine already ran is not ours to stop.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from conveyor.errors import LocalStackFailed
from conveyor.localstack import process

PROGRAM = "dockerd"
# Debian's dockerd without the bridge and iptables rules: containers use host networking.
ARGS = ("--bridge=none", "--iptables=false")


class DockerDaemon:
    def __init__(self, state_dir: Path, ping_timeout: float = 5.0) -> None:
        self.pid_file = state_dir / "dockerd.pid"
        self.log_path = state_dir / "dockerd.log"
        self.ping_timeout = ping_timeout

    def answers(self) -> bool:
        """True when the engine at DOCKER_HOST (or the default socket) answers a ping."""
        try:
            client = docker.from_env(timeout=self.ping_timeout)
        except docker.errors.DockerException:
            return False
        try:
            return bool(client.ping())
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False
        finally:
            client.close()

    def ours(self) -> int | None:
        """The pid of the dockerd ``up`` started, if it still runs."""
        return process.read_pid(self.pid_file, PROGRAM)

    def ensure(self, timeout: float = 60.0) -> str:
        """Make an engine answer; say whether it was started now or already ran."""
        if self.answers():
            return "already running"
        binary = shutil.which(PROGRAM)
        if binary is None:
            raise LocalStackFailed("dockerd not found: apt-get install docker.io")
        if os.geteuid() != 0:
            raise LocalStackFailed(
                "no Docker Engine answers and starting dockerd needs root: "
                "run `sudo conveyor up --only docker`, or start Docker yourself"
            )
        return process.start_recorded(
            [binary, *ARGS],
            log_path=self.log_path,
            pid_file=self.pid_file,
            what="dockerd",
            ready=self.answers,
            timeout=timeout,
            on_failure=self.stop,
        )

    def stop(self, timeout: float = 30.0) -> str:
        pid = self.ours()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return "left alone (not started by conveyor)" if self.answers() else "not running"
        process.stop(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return f"stopped (pid {pid})"
