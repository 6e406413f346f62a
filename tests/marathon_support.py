"""Helpers of the Marathon/DC-OS tests: the simulator as a process, images in a registry.

The sample app (examples/hello) is built FROM scratch with Debian's busybox, pushed to a
real docker-registry started here, and deployed by digest; the simulator runs its tasks
as real containers (host networking, 127.0.0.1).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import httpx
from pydantic import SecretStr

from conveyor.localstack.registry import RegistryServer
from conveyor.release import Release
from tests.parts import free_port, missing, require_binary

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello"
TEMPLATE = ROOT / "deployments" / "marathon" / "hello.json"


def hello_context(with_health: bool = True, dockerfile: str | None = None) -> io.BytesIO:
    """The hello folder as a tar with links dereferenced (``tar -ch``); without
    ``www/health`` when not ``with_health``, with ``dockerfile`` in place of its own."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        for path in sorted(HELLO.rglob("*")):
            rel = path.relative_to(HELLO).as_posix()
            if rel == "Dockerfile" and dockerfile is not None:
                continue
            if rel == "www/health" and not with_health:
                continue
            tar.add(path, arcname=rel, recursive=False)
        if dockerfile is not None:
            data = dockerfile.encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def start_registry(directory: Path, user: str | None = None) -> RegistryServer:
    """A docker-registry on a free 127.0.0.1 port (behind htpasswd with a fresh password
    for ``user`` when given), started, for the tests that build the sample images into it
    (so busybox-static is needed too)."""
    require_binary("docker-registry", "apt-get install docker-registry")
    htpasswd = None
    if user is not None:
        require_binary("htpasswd", "apt-get install apache2-utils")
        htpasswd = (user, SecretStr(secrets.token_urlsafe(16)))
    require_binary("busybox", "apt-get install busybox-static")
    reg = RegistryServer(directory, port=free_port(), htpasswd=htpasswd)
    reg.start(timeout=60)
    return reg


def push_auth(reg: RegistryServer) -> dict[str, str]:
    """docker-py's auth_config for the user ``start_registry`` made."""
    assert reg.htpasswd is not None
    user, password = reg.htpasswd
    return {"username": user, "password": password.get_secret_value()}


def push(
    client: docker.DockerClient, repo: str, tag: str, auth: dict[str, str] | None = None
) -> str:
    """Push ``repo:tag`` through the Docker Engine; the digest the registry answered."""
    digest = None
    for line in client.images.push(repo, tag=tag, auth_config=auth, stream=True, decode=True):
        assert "error" not in line, line
        digest = line.get("aux", {}).get("Digest", digest)
    assert digest is not None
    return str(digest)


def build_and_push(
    client: docker.DockerClient,
    reg: RegistryServer,
    app: str,
    version: str,
    with_health: bool = True,
    *,
    context: io.BytesIO | None = None,
    buildargs: dict[str, str] | None = None,
    auth: dict[str, str] | None = None,
) -> Release:
    """The hello app (or ``context``) built at ``version`` and pushed as conveyor/<app>."""
    repo = f"{reg.address}/conveyor/{app}"
    client.images.build(
        fileobj=context or hello_context(with_health),
        custom_context=True,
        tag=f"{repo}:{version}",
        rm=True,
        buildargs={"VERSION": version, **(buildargs or {})},
        network_mode="none",
        # Other modules build the same sample app: without a label of our own the build
        # cache would hand us their image ids, and their clean-up would delete ours.
        labels={"conveyor.test": app},
    )
    digest = push(client, repo, version, auth)
    return Release(
        app=app, registry=reg.address, repository=f"conveyor/{app}", digest=digest, version=version
    )


def fast_template(tmp: Path, **changes: Any) -> Path:
    """The shipped template with quicker health checks, for tests that must stay short."""
    app = json.loads(TEMPLATE.read_text())
    app["healthChecks"][0].update(intervalSeconds=1, timeoutSeconds=1, gracePeriodSeconds=20)
    app.update(changes)
    path = tmp / f"app-{secrets.token_hex(3)}.json"
    path.write_text(json.dumps(app))
    return path


class Sim:
    """One ``python -m conveyor.sim.marathon`` process."""

    def __init__(
        self, proc: subprocess.Popen[str], url: str, name: str, port: int, low: int
    ) -> None:
        self.proc = proc
        self.url = url
        self.name = name
        self.port = port
        self.low = low
        self.admin = httpx.Client(base_url=url, timeout=10)

    def fault(self, **spec: Any) -> dict[str, Any]:
        response = self.admin.post("/_sim/faults", json=spec)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def clear_faults(self) -> None:
        self.admin.delete("/_sim/faults").raise_for_status()

    def state(self) -> dict[str, Any]:
        return dict(self.admin.get("/_sim/state").json())


@contextmanager
def run_sim(
    docker_client: docker.DockerClient,
    *args: str,
    agents: int = 2,
    timeout_s: float = 30,
    again: Sim | None = None,
    keep_containers: bool = False,
) -> Iterator[Sim]:
    """A simulator process; ``again``: on the port, name and task ports of an earlier one
    (a restart); ``keep_containers``: leave its tasks running when it stops."""
    port = again.port if again else free_port()
    low = again.low if again else 20000 + secrets.randbelow(20000)
    name = again.name if again else "t" + secrets.token_hex(4)
    cmd = [
        sys.executable, "-m", "conveyor.sim.marathon", "--listen", f"127.0.0.1:{port}",
        "--name", name, "--ports", f"{low}-{low + 199}", "--agents", str(agents), *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                missing("the Marathon simulator", f"it exited with {proc.returncode}: {out[-800:]}")
            try:
                if httpx.get(url + "/_sim/state", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the Marathon simulator did not come up in time")
            time.sleep(0.1)
        sim = Sim(proc, url, name, port, low)
        yield sim
        sim.admin.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        leftover = {"label": f"conveyor.sim.instance={name}"}
        for c in (
            [] if keep_containers else docker_client.containers.list(all=True, filters=leftover)
        ):
            c.remove(force=True)
