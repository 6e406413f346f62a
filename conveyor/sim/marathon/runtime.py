"""Tasks as real containers on the Docker Engine (the simulator's Mesos agent).

Every container is labelled ``conveyor.sim=marathon`` and ``conveyor.sim.instance=<name>``
so one simulator never touches another's containers and can sweep its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

log = logging.getLogger(__name__)

SIM_LABEL = "conveyor.sim"
INSTANCE_LABEL = "conveyor.sim.instance"
TASK_LABEL = "conveyor.sim.task"
# Mesos's own floors for a container's limits (MIN_CPUS, MIN_MEMORY of its cgroups
# isolators); 32 MB is also above docker's refusal of memory limits below 6 MB.
MIN_CPUS = 0.01
MIN_MEMORY_MB = 32.0


class LaunchFailed(Exception):
    """The task could not start (pull or create failed); the message becomes TASK_FAILED's."""


def _registry_of(image: str) -> str:
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def load_docker_auths(path: Path | None) -> dict[str, dict[str, str]]:
    """Registry -> {username, password} from a docker config.json (or DOCKER_CONFIG)."""
    if path is None:
        env_dir = os.environ.get("DOCKER_CONFIG")
        if not env_dir:
            return {}
        path = Path(env_dir) / "config.json"
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        return {}
    auths: dict[str, dict[str, str]] = {}
    for registry, entry in json.loads(path.read_text()).get("auths", {}).items():
        host = registry.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            auths[host] = {"username": user, "password": password}
        elif entry.get("username"):
            auths[host] = {"username": entry["username"], "password": entry.get("password", "")}
    return auths


class DockerRuntime:
    def __init__(
        self,
        client: docker.DockerClient,
        instance: str,
        docker_auths: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.client = client
        self.instance = instance
        self._auths = docker_auths or {}
        self._watcher: Any = None
        self._host_cpus: float | None = None

    def limits(self, app: dict[str, Any]) -> dict[str, int]:
        """``cpus``/``mem`` as the container's CFS quota and memory limit, like Mesos's
        isolators; CPU is capped at the host's cores, which docker refuses to exceed."""
        if self._host_cpus is None:
            self._host_cpus = float(self.client.info().get("NCPU") or os.cpu_count() or 1)
        cpus = min(max(float(app["cpus"]), MIN_CPUS), self._host_cpus)
        mem = max(float(app["mem"]), MIN_MEMORY_MB)
        return {"nano_cpus": int(cpus * 1e9), "mem_limit": int(mem * 1024 * 1024)}

    @property
    def label_filter(self) -> list[str]:
        return [f"{SIM_LABEL}=marathon", f"{INSTANCE_LABEL}={self.instance}"]

    def _ensure_image(self, image: str, force_pull: bool) -> None:
        if not force_pull:
            try:
                self.client.images.get(image)
                return
            except docker.errors.ImageNotFound:
                pass
        auth = self._auths.get(_registry_of(image))
        try:
            for status in self.client.api.pull(image, auth_config=auth, stream=True, decode=True):
                if "error" in status:
                    raise LaunchFailed(f"Failed to pull image '{image}': {status['error']}")
        except (docker.errors.APIError, requests.RequestException) as exc:
            raise LaunchFailed(f"Failed to pull image '{image}': {exc}") from None

    def launch(self, task_id: str, app: dict[str, Any], env: dict[str, str]) -> str:
        """Start the container of one task; the id is returned once it runs."""
        docker_def = (app.get("container") or {}).get("docker") or {}
        image = docker_def.get("image")
        if not image:
            raise LaunchFailed(
                "the simulator runs only Docker containers: container.docker.image is missing"
            )
        self._ensure_image(image, bool(docker_def.get("forcePullImage")))
        kwargs: dict[str, Any] = {}
        if app.get("cmd"):
            # Mesos wraps cmd in a shell, replacing the image's entrypoint.
            kwargs.update(entrypoint=["/bin/sh", "-c"], command=[app["cmd"]])
        elif app.get("args"):
            kwargs["command"] = list(app["args"])
        labels = {
            SIM_LABEL: "marathon",
            INSTANCE_LABEL: self.instance,
            TASK_LABEL: task_id,
            "conveyor.sim.app": app["id"],
        }
        try:
            container = self.client.containers.run(
                image,
                detach=True,
                network_mode="host",
                environment=env,
                labels=labels,
                name=f"marathon-sim-{self.instance}-{task_id}"[:200],
                init=True,
                **self.limits(app),
                **kwargs,
            )
        except (
            docker.errors.APIError,
            docker.errors.ImageNotFound,
            requests.RequestException,
        ) as exc:
            raise LaunchFailed(f"Failed to launch container: {exc}") from None
        return str(container.id)

    def stop(self, container_id: str, grace_s: float) -> None:
        """SIGTERM, SIGKILL after ``grace_s`` (whole seconds, as Marathon's
        taskKillGracePeriodSeconds); returns once the container has exited."""
        try:
            self.client.api.stop(container_id, timeout=max(0, math.ceil(grace_s)))
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.RequestException) as exc:
            log.warning("could not stop container %s: %s", container_id[:12], exc)

    def remove(self, container_id: str) -> None:
        """Remove a container (force: also a running one); a vanished container is fine."""
        try:
            self.client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.RequestException) as exc:
            log.warning("could not remove container %s: %s", container_id[:12], exc)

    def exit_reason(self, container_id: str) -> tuple[bool, str]:
        """(failed, message) for an exited container, which is removed afterwards."""
        try:
            container = self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return True, "Container disappeared"
        state = container.attrs.get("State", {})
        code = int(state.get("ExitCode", -1))
        tail = container.logs(tail=3).decode(errors="replace").strip().replace("\n", " | ")
        message = f"Command exited with status {code}" + (f": {tail}" if tail else "")
        if state.get("OOMKilled"):
            message = "Memory limit exceeded: " + message
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
        return code != 0, message

    def exited_containers(self) -> list[str]:
        found = self.client.api.containers(
            all=True, filters={"label": self.label_filter, "status": ["exited", "dead"]}
        )
        return [str(c["Id"]) for c in found]

    def containers_by_task(self) -> dict[str, tuple[str, str]]:
        """Task id -> (container id, status) for every container of this instance."""
        found = self.client.api.containers(all=True, filters={"label": self.label_filter})
        return {
            str((c.get("Labels") or {}).get(TASK_LABEL, c["Id"])): (str(c["Id"]), str(c["State"]))
            for c in found
        }

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def watch_exits(self, on_exit: Callable[[str], None]) -> threading.Thread:
        """Call ``on_exit(container_id)`` for every container of ours that dies."""
        stream = self.client.events(
            decode=True,
            filters={"type": "container", "event": ["die"], "label": self.label_filter},
        )
        self._watcher = stream

        def run() -> None:
            try:
                for event in stream:
                    on_exit(str(event.get("id") or event.get("Actor", {}).get("ID", "")))
            except Exception as exc:  # a closed stream ends the watch
                log.debug("docker event stream ended: %s", exc)

        thread = threading.Thread(target=run, name="sim-docker-events", daemon=True)
        thread.start()
        return thread

    def remove_all(self) -> int:
        """Remove every container of this simulator instance (at start: stale ones)."""
        self.stop_watching()
        count = 0
        for summary in self.client.api.containers(all=True, filters={"label": self.label_filter}):
            try:
                self.client.api.remove_container(summary["Id"], force=True)
                count += 1
            except docker.errors.NotFound:
                pass
        return count
