"""The simulated clusters of the local demo: two DC/OS clusters and one vCenter.

"integration" stands for DC/OS on Azure, "production" for DC/OS on vSphere, whose
VMs the vCenter simulator carries (its agent VMs are named like the production
cluster's agents, so placement can be checked). Credentials are made once and kept
in ``<home>/clusters``: the DC/OS service account's RSA key pair, the vCenter
password and certificate, and a docker config with the registry's login, which the
simulated agents use to pull by digest as Mesos agents do.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from conveyor.errors import LocalStackFailed
from conveyor.localstack import process

HOST = "127.0.0.1"
SERVICE_ACCOUNT = "conveyor"
VCENTER_USER = "administrator@vsphere.local"


@dataclass(frozen=True)
class Cluster:
    name: str
    port: int
    agents: int


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class LocalClusters:
    def __init__(self, home: Path, marathon_ports: tuple[int, int], vcenter_port: int) -> None:
        self.root = home / "clusters"
        self.clusters = (
            Cluster("integration", marathon_ports[0], 2),
            Cluster("production", marathon_ports[1], 3),
        )
        self.vcenter_port = vcenter_port

    # --- credentials -----------------------------------------------------------

    @property
    def private_key(self) -> Path:
        return self.root / "service-account.key"

    @property
    def public_key(self) -> Path:
        return self.root / "service-account.pub"

    @property
    def vcenter_cert(self) -> Path:
        return self.root / "vcenter.crt"

    def _ensure_keys(self) -> None:
        if self.private_key.exists() and self.vcenter_cert.exists():
            return
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(
            self.private_key,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        self.public_key.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self._make_vcenter_cert()

    def _make_vcenter_cert(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vcenter.local")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        _write_private(
            self.root / "vcenter.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        self.vcenter_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def vcenter_password(self) -> SecretStr:
        path = self.root / "vcenter-password"
        if not path.exists():
            _write_private(path, secrets.token_urlsafe(18).encode())
        return SecretStr(path.read_text().strip())

    def write_docker_config(self, registry: str, user: str, password: SecretStr) -> Path:
        token = base64.b64encode(f"{user}:{password.get_secret_value()}".encode()).decode()
        path = self.root / "docker-config.json"
        _write_private(path, json.dumps({"auths": {registry: {"auth": token}}}).encode())
        return path

    # --- processes -------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def _log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def _marathon_argv(self, c: Cluster, docker_config: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "conveyor.sim.marathon",
            "--listen",
            f"{HOST}:{c.port}",
            "--dcos",
            "--name",
            c.name,
            "--agents",
            str(c.agents),
            "--service-account",
            f"{SERVICE_ACCOUNT}={self.public_key}",
            "--docker-config",
            str(docker_config),
            "--ports",
            "31000-31999" if c.name == "integration" else "32000-32999",
            # Marathon keeps its apps in ZooKeeper: after down and up they are still there.
            "--state-dir",
            str(self.root / f"dcos-{c.name}"),
        ]

    def _vcenter_argv(self, agents: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "conveyor.sim.vcenter",
            "--listen",
            f"{HOST}:{self.vcenter_port}",
            "--hosts",
            "3",
            "--agents",
            str(agents),
            "--agent-prefix",
            "production-agent-",
            "--cert",
            str(self.vcenter_cert),
            "--key",
            str(self.root / "vcenter.key"),
        ]

    def _ours(self, name: str, port: int) -> int | None:
        """The pid of our simulator on ``port``; the vCenter launcher replaces its own
        process image, so its command line, not its program name, identifies it."""
        try:
            pid = int(self._pid_file(name).read_text().strip())
        except (OSError, ValueError):
            return None
        if pid > 1 and process.alive(pid) and f"{HOST}:{port}" in process.cmdline(pid):
            return pid
        return None

    def _start(self, name: str, argv: list[str], port: int, env: dict[str, str]) -> str:
        if self._ours(name, port) is not None and process.listening(HOST, port):
            return "already running"
        if process.listening(HOST, port):
            raise LocalStackFailed(
                f"port {port} for the {name} simulator is taken by another process"
            )
        pid = process.spawn(argv, self._log(name), env={**os.environ, **env})
        process.write_pid(self._pid_file(name), pid)
        # The first start compiles the vCenter simulator, which takes minutes.
        timeout = 600 if name == "vcenter" else 60
        process.wait_until(
            lambda: process.listening(HOST, port), timeout, f"the {name} simulator", self._log(name)
        )
        return f"started (pid {pid})"

    def up(self, registry: str, user: str, password: SecretStr) -> list[str]:
        self._ensure_keys()
        docker_config = self.write_docker_config(registry, user, password)
        done = [
            f"dcos-{c.name}: {self._start(f'dcos-{c.name}', self._marathon_argv(c, docker_config), c.port, {})}"
            for c in self.clusters
        ]
        env = {"VCSIM_PASSWORD": self.vcenter_password().get_secret_value()}
        vcenter = self._vcenter_argv(self.clusters[1].agents)
        done.append(f"vcenter: {self._start('vcenter', vcenter, self.vcenter_port, env)}")
        return done

    def _ports(self) -> dict[str, int]:
        ports = {f"dcos-{c.name}": c.port for c in self.clusters}
        return {**ports, "vcenter": self.vcenter_port}

    def down(self) -> list[str]:
        done = []
        for name in ("vcenter", "dcos-production", "dcos-integration"):
            pid = self._ours(name, self._ports()[name])
            self._pid_file(name).unlink(missing_ok=True)
            if pid is not None:
                process.stop(pid)
                done.append(f"{name}: stopped (pid {pid})")
            else:
                done.append(f"{name}: not running")
        return done

    def status(self) -> list[tuple[str, bool, str]]:
        """(name, running as ours, url) of each simulator."""
        rows = []
        for name, port in self._ports().items():
            scheme, path = ("https", "/sdk") if name == "vcenter" else ("http", "")
            running = self._ours(name, port) is not None and process.listening(HOST, port)
            rows.append((name, running, f"{scheme}://{HOST}:{port}{path}"))
        return rows
