"""conveyor's vCenter simulator: builds the Go launcher next to this file once per
source version and runs it on a loopback port.

The binary is cached by the hash of ``main.go`` and the Go version, so only the
first start on a machine pays for the Go build.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from conveyor.errors import TerminalError

SOURCE = Path(__file__).with_name("main.go")
GOPATH = Path("/usr/share/gocode")
BUILD_TIMEOUT_S = 600
START_TIMEOUT_S = 120


class SimulatorError(TerminalError):
    """The simulator could not be built or started (the message says which and why)."""


def cache_dir() -> Path:
    if os.environ.get("CONVEYOR_CACHE_DIR"):
        return Path(os.environ["CONVEYOR_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "conveyor"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise SimulatorError("the Go toolchain is missing: apt-get install golang-go")
    if not (GOPATH / "src/github.com/vmware/govmomi/simulator").is_dir():
        raise SimulatorError(
            "govmomi sources are missing: apt-get install golang-github-vmware-govmomi-dev"
        )
    return go


def _source_key(go: str) -> str:
    version = subprocess.run([go, "version"], capture_output=True, text=True, timeout=60).stdout
    digest = hashlib.sha256(SOURCE.read_bytes() + version.encode()).hexdigest()
    return digest[:16]


def build(force: bool = False) -> Path:
    """The launcher binary, built now unless this source version is already cached."""
    go = _go()
    folder = cache_dir() / "vcsim"
    binary = folder / f"vcsim-{_source_key(go)}"
    if binary.is_file() and not force:
        return binary
    folder.mkdir(parents=True, exist_ok=True)
    # Parallel test workers must not race to build the same binary.
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file() and not force:
            return binary
        tmp = folder / f".{binary.name}.{os.getpid()}"
        env = {
            **os.environ,
            "GO111MODULE": "off",
            "GOPATH": str(GOPATH),
            "GOCACHE": str(folder / "gocache"),
            "GOFLAGS": "",
            "CGO_ENABLED": "0",
        }
        proc = subprocess.run(
            [go, "build", "-o", str(tmp), str(SOURCE)],
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        if proc.returncode != 0:
            raise SimulatorError(f"go build of {SOURCE} failed:\n{proc.stderr.strip()}")
        tmp.replace(binary)
    return binary


@dataclass(frozen=True)
class Agent:
    vm: str
    hostname: str
    ip: str
    host: str


@dataclass
class VCenterSim:
    """A running simulator; ``stop()`` (or leaving the ``with`` block) ends it."""

    url: str
    host: str
    port: int
    username: str
    password: SecretStr
    cert: Path
    thumbprint_sha256: str
    thumbprint_sha1: str
    datacenter: str
    cluster: str
    hosts: list[str]
    datastores: list[str]
    agents: list[Agent]
    virtual_machines: int
    inventory_seconds: float
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """What a person or a test needs to connect; never the password."""
        skip = {"password", "process", "log_path"}
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        out["cert"] = str(self.cert)
        out["agents"] = [asdict(a) for a in self.agents]
        return out

    def stop(self, timeout_s: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> VCenterSim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _read_ready(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> dict[str, Any]:
    """The launcher's one JSON line, read with a deadline (a hung build must not hang us)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    data = b""
    while b"\n" not in data and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    if b"\n" in data:
        return dict(json.loads(data.split(b"\n", 1)[0]))
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log = log_path.read_text(errors="replace").strip()[-2000:]
    raise SimulatorError(
        f"the vCenter simulator did not become ready (exit {proc.returncode}): {log}"
    )


def start(
    *args: str,
    listen: str = "127.0.0.1:0",
    password: SecretStr | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> VCenterSim:
    """Start the simulator with launcher options ``args`` (e.g. ``"--hosts", "50"``).

    The password travels in the environment, not on the command line, where any
    local user could read it from the process list.
    """
    binary = build()
    secret = password or SecretStr(secrets.token_urlsafe(16))
    log_fd, log_name = tempfile.mkstemp(prefix="conveyor-vcsim-", suffix=".log")
    log_path = Path(log_name)
    env = {**os.environ, "VCSIM_PASSWORD": secret.get_secret_value()}
    proc = subprocess.Popen(
        [str(binary), "--listen", listen, *args],
        stdout=subprocess.PIPE,
        stderr=log_fd,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(log_fd)
    info = _read_ready(proc, log_path, timeout_s)
    return VCenterSim(
        url=info["url"],
        host=info["host"],
        port=int(info["port"]),
        username=info["username"],
        password=secret,
        cert=Path(info["cert"]),
        thumbprint_sha256=info["thumbprint_sha256"],
        thumbprint_sha1=info["thumbprint_sha1"],
        datacenter=info["datacenter"],
        cluster=info["cluster"],
        hosts=list(info["hosts"]),
        datastores=list(info["datastores"]),
        agents=[Agent(**a) for a in info["agents"]],
        virtual_machines=int(info["virtual_machines"]),
        inventory_seconds=float(info["inventory_seconds"]),
        process=proc,
        log_path=log_path,
    )


def password_for_humans() -> tuple[SecretStr, Path | None]:
    """The login password for a simulator started by hand.

    Taken from VCSIM_PASSWORD; otherwise a fresh one is written to a private file,
    whose path (never the password) is shown to the person.
    """
    if os.environ.get("VCSIM_PASSWORD"):
        return SecretStr(os.environ["VCSIM_PASSWORD"]), None
    secret = secrets.token_urlsafe(16)
    folder = cache_dir() / "vcsim"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return SecretStr(secret), path
