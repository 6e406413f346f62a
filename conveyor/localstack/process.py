"""Detached background processes tracked by pid files, for the local stack.

Services outlive the ``conveyor up`` that started them, so a later ``down`` or
``status`` only has the pid file to go by; a pid is trusted only while that process
is alive and its command line still names the expected program (pids get reused).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import SecretStr

from conveyor.errors import LocalStackFailed
from conveyor.net import port_free


def _reap(pid: int) -> None:
    # A child of this very process that exited stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (zombies count as gone)."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def read_pid(path: Path, program: str) -> int | None:
    """The pid in ``path`` if that process is alive and runs ``program``."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 1 or not alive(pid):
        return None
    if not any(Path(arg).name == program or arg == program for arg in cmdline(pid)):
        return None
    return pid


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n")


def spawn(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    user: pwd.struct_passwd | None = None,
) -> int:
    """Start ``argv`` in a session of its own (as ``user`` if given), output appended
    to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd="/" if user else None,
        )
    return proc.pid


def start_recorded(
    argv: Sequence[str],
    *,
    log_path: Path,
    pid_file: Path,
    what: str,
    ready: Callable[[], bool],
    timeout: float,
    on_failure: Callable[[], object],
    env: Mapping[str, str] | None = None,
) -> str:
    """Spawn ``argv``, record its pid and wait until ``ready()``. A process that exits
    first, or a timeout, calls ``on_failure`` (the service's own stop) and raises
    naming ``what`` and the end of its log."""
    pid = spawn(argv, log_path, env)
    write_pid(pid_file, pid)

    def up() -> bool:
        if not alive(pid):
            raise LocalStackFailed(f"{what} exited at start{log_hint(log_path)}")
        return ready()

    try:
        wait_until(up, timeout, what, log_path)
    except BaseException:
        on_failure()
        raise
    return f"started (pid {pid})"


def stop_recorded(pid: int | None, pid_file: Path, timeout: float) -> str:
    """Stop the service whose pid file said ``pid`` (None: not ours, or not running)."""
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return "not running"
    stop(pid, timeout)
    return f"stopped (pid {pid})"


def generated_secret(path: Path) -> SecretStr:
    """The secret kept in ``path``, made on first use and readable by its owner only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    return SecretStr(path.read_text().strip())


def stop(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group led by ``pid``, then SIGKILL what is left at ``timeout``."""
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)
    if alive(pid):
        raise LocalStackFailed(f"process {pid} did not stop, even after SIGKILL")


def listening(host: str, port: int) -> bool:
    """True when something accepts connections, or holds a bind, on ``host:port``."""
    return not port_free(host, port)


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None) -> None:
    """Poll ``check`` until it is true; after ``timeout`` raise naming ``what`` and the log."""
    deadline = time.monotonic() + timeout
    interval = 0.05
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)
    raise LocalStackFailed(f"{what} did not come up within {timeout:g}s{log_hint(log)}")


def log_hint(log: Path | None, lines: int = 15) -> str:
    if log is None:
        return ""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"; see {log}"
    return f"; see {log}, which ends:\n  " + "\n  ".join(tail)
