"""A launcher for Debian's distribution registry (``/usr/bin/docker-registry``).

``conveyor up`` runs it as the local stack's registry (plain HTTP + htpasswd) and the
tests run it with TLS or token auth. Everything it needs lives under ``root``: the
generated ``config.yml``, the htpasswd file, the blob store and the log.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from pydantic import SecretStr

from conveyor.errors import ConfigError, TerminalError
from conveyor.net import free_port

BINARY = "docker-registry"


@dataclass(frozen=True)
class TokenAuth:
    """Settings of distribution's ``auth.token`` section."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass(frozen=True)
class UploadPurging:
    """distribution's ``storage.maintenance.uploadpurging``: pushes that fail or are cut
    off leave upload sessions under ``_uploads`` that nothing else removes.

    distribution starts the first purge after a random delay of up to an hour, then
    repeats it every ``interval``, removing sessions older than ``age``. An hour is far
    longer than any push of ours takes, so no upload in progress is cut; a team registry
    keeps distribution's defaults (168h and 24h) unless its pushes are quicker.
    """

    enabled: bool = True
    age: str = "1h"
    interval: str = "1h"
    dryrun: bool = False

    def config(self) -> dict[str, object]:
        if not self.enabled:
            return {"enabled": False}
        return {
            "enabled": True,
            "age": self.age,
            "interval": self.interval,
            "dryrun": self.dryrun,
        }


def _bcrypt_htpasswd(path: Path, user: str, password: SecretStr) -> None:
    """Write a bcrypt htpasswd file; distribution accepts no other hash."""
    tool = shutil.which("htpasswd")
    if tool is None:
        raise ConfigError("registry", ["htpasswd (apache2-utils) is needed to write a bcrypt file"])
    # -i reads the password from stdin, so it never shows in the process list.
    done = subprocess.run(
        [tool, "-B", "-i", "-c", str(path), user],
        input=password.get_secret_value(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError("registry", [f"htpasswd failed: {done.stderr.strip()}"])


class RegistryServer:
    """One ``docker-registry`` process bound to ``host:port`` with its own storage."""

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        htpasswd: tuple[str, SecretStr] | None = None,
        tls: tuple[Path, Path] | None = None,
        token_auth: TokenAuth | tuple[str, str, str, Path] | None = None,
        delete_enabled: bool = True,
        upload_purging: UploadPurging | None = None,
        binary: str = BINARY,
    ) -> None:
        if htpasswd is not None and token_auth is not None:
            raise ConfigError("registry", ["choose htpasswd or token auth, not both"])
        self.root = Path(root)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.htpasswd = htpasswd
        self.tls = tls
        if isinstance(token_auth, tuple):
            token_auth = TokenAuth(*token_auth)
        self.token_auth = token_auth
        self.delete_enabled = delete_enabled
        self.upload_purging = upload_purging or UploadPurging()
        self.binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"RegistryServer(url={self.url!r}, root={str(self.root)!r})"

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` as image references name the registry."""
        return self.url.split("://", 1)[1]

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    @property
    def storage_path(self) -> Path:
        return self.root / "storage"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config(self) -> dict[str, object]:
        """The registry's configuration as distribution 2.8 reads it."""
        http: dict[str, object] = {
            "addr": f"{self.host}:{self.port}",
            # A fixed secret silences the "generating a random secret" warning and keeps
            # upload state valid across restarts of the same root.
            "secret": f"conveyor-local-{self.port}",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.tls:
            http["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        auth: dict[str, object] = {}
        if self.htpasswd is not None:
            auth["htpasswd"] = {"realm": "conveyor", "path": str(self.root / "htpasswd")}
        if self.token_auth is not None:
            t = self.token_auth
            auth["token"] = {
                "realm": t.realm,
                "service": t.service,
                "issuer": t.issuer,
                "rootcertbundle": str(t.rootcertbundle),
            }
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_path)},
                "delete": {"enabled": self.delete_enabled},
                "maintenance": {"uploadpurging": self.upload_purging.config()},
            },
            "http": http,
        }
        if auth:
            config["auth"] = auth
        return config

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage_path.mkdir(exist_ok=True)
        if self.htpasswd is not None:
            _bcrypt_htpasswd(self.root / "htpasswd", *self.htpasswd)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path

    def start(self, timeout: float = 30.0) -> RegistryServer:
        """Start the process and return once ``/v2/`` answers (200 or 401)."""
        if self.running:
            return self
        binary = shutil.which(self.binary)
        if binary is None:
            raise ConfigError("registry", [f"{self.binary} not found (install docker-registry)"])
        self.write_config()
        # distribution writes its log to stderr and the access log to stdout: keep both.
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "serve", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _probe_context(self) -> ssl.SSLContext | bool:
        if not self.tls:
            return True
        # Liveness probe of our own child on loopback: nothing secret is sent and the
        # server certificate may be signed by a CA this launcher is not told about.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=self._probe_context(), timeout=2.0) as probe:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    raise TerminalError(f"docker-registry exited at start:\n{self.log_tail()}")
                try:
                    status = probe.get(f"{self.url}/v2/").status_code
                except httpx.HTTPError:
                    status = 0
                if status in (200, 401):
                    return
                time.sleep(0.05)
        raise TerminalError(
            f"docker-registry did not answer on {self.url} within {timeout}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
