"""A PostgreSQL server for the stack's Prefect server (``conveyor up --db postgres``).

Debian's postgresql, its cluster initialised under the stack's folder and listening on
127.0.0.1 only, with a generated password (scram-sha-256) kept readable by its owner.
PostgreSQL refuses to run as root, so as root the cluster belongs to, and runs as, the
``postgres`` user the package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

from pydantic import SecretStr

from conveyor.errors import LocalStackFailed
from conveyor.localstack import process

PROGRAM = "postgres"
SERVICE_USER = "postgres"
DB_USER = "conveyor"
DATABASE = "prefect"


def bindir() -> Path:
    """The newest installed PostgreSQL's programs (Debian keeps them off PATH)."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("postgres")
    if found is None:
        raise LocalStackFailed("PostgreSQL not found: apt-get install postgresql")
    return Path(found).resolve().parent


class PostgresServer:
    def __init__(self, state_dir: Path, host: str = "127.0.0.1", port: int = 5432) -> None:
        self.root = state_dir / "postgres"
        self.data = self.root / "data"
        self.log_path = state_dir / "postgres.log"
        self.password_file = self.root / "password"
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        return f"PostgresServer(host={self.host!r}, port={self.port})"

    def _user(self) -> pwd.struct_passwd | None:
        """Who runs the cluster: the postgres user when we are root, else ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise LocalStackFailed(
                "PostgreSQL cannot run as root and there is no postgres user: "
                "apt-get install postgresql"
            ) from None

    def password(self) -> SecretStr:
        return process.generated_secret(self.password_file)

    def url(self) -> SecretStr:
        """The SQLAlchemy URL Prefect's server connects with (it holds the password)."""
        secret = quote(self.password().get_secret_value(), safe="")
        return SecretStr(
            f"postgresql+asyncpg://{DB_USER}:{secret}@{self.host}:{self.port}/{DATABASE}"
        )

    def ours(self) -> int | None:
        """The postmaster's pid (from its own pid file) while it runs."""
        try:
            first = (self.data / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, IndexError, ValueError):
            return None
        names = [Path(arg).name for arg in process.cmdline(pid)[:1]]
        return pid if process.alive(pid) and PROGRAM in names else None

    def _run(self, argv: list[str], user: pwd.struct_passwd | None, env: dict[str, str]) -> None:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd="/",
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise LocalStackFailed(f"{Path(argv[0]).name} failed: " + " / ".join(tail))

    def _initdb(self, bindir: Path, user: pwd.struct_passwd | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "initdb-password"
        pwfile.write_text(self.password().get_secret_value() + "\n")
        if user is not None:
            for path in (self.root, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
        try:
            argv = [str(bindir / "initdb"), "-D", str(self.data), "-U", DB_USER]
            argv += ["--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8"]
            self._run(argv, user, {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"})
        finally:
            pwfile.unlink(missing_ok=True)

    def _reachable_by(self, user: pwd.struct_passwd) -> None:
        for parent in [self.root, *self.root.parents]:
            mode = parent.stat().st_mode
            if parent.stat().st_uid != user.pw_uid and not mode & 0o001:
                raise LocalStackFailed(
                    f"the postgres user cannot enter {parent} (mode {mode & 0o777:o}): "
                    "put the stack's folder (--home) where other users may pass"
                )

    def _accepting(self, bindir: Path) -> bool:
        """Listening is not ready: until its startup ends PostgreSQL refuses every
        connection ("the database system is starting up"), createdb's too."""
        argv = [str(bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)]
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0

    def start(self, timeout: float = 60.0) -> str:
        if self.ours() is not None:
            return "already running"
        if process.listening(self.host, self.port):
            raise LocalStackFailed(f"port {self.port} is taken by another process")
        programs = bindir()
        user = self._user()
        self.root.mkdir(parents=True, exist_ok=True)
        if user is not None:
            self._reachable_by(user)
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self._initdb(programs, user)
        argv = [str(programs / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        argv += [
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={self.data}",
        ]
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"}
        pid = process.spawn(argv, self.log_path, env, user=user)
        process.wait_until(
            lambda: (
                process.alive(pid)
                and process.listening(self.host, self.port)
                and self._accepting(programs)
            ),
            timeout,
            f"PostgreSQL on {self.host}:{self.port}",
            self.log_path,
        )
        if fresh:
            self._createdb(programs, env)
        return f"started (pid {pid})"

    def _createdb(self, bindir: Path, env: dict[str, str]) -> None:
        """The database Prefect uses. The password goes through a pgpass file readable by
        its owner only, never through the environment (PGPASSWORD), where a process
        listing or a printed traceback shows it."""
        passfile = self.root / "pgpass"
        line = f"{self.host}:{self.port}:*:{DB_USER}:{self.password().get_secret_value()}\n"
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(line)
        create = [str(bindir / "createdb"), "-h", self.host, "-p", str(self.port)]
        create += ["-U", DB_USER, "--no-password", DATABASE]
        try:
            self._run(create, None, {**env, "PGPASSFILE": str(passfile)})
        finally:
            passfile.unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0) -> str:
        pid = self.ours()
        if pid is None:
            return "not running"
        # SIGTERM is PostgreSQL's "smart" shutdown: it waits for the Prefect server's
        # connections, which is why the server is stopped first.
        process.stop(pid, timeout)
        return f"stopped (pid {pid})"
