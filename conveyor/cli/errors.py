"""The CLI's one error boundary: every known failure ends in one clear line on stderr.

Conveyor's own errors, an unreachable or failing Prefect server and an interrupt each
become one line and an exit code; the traceback goes to the CLI's log file (in the
stack's folder), where a person debugging looks, never to the terminal. Messages are
printed as plain text: an error quoting a pipeline file may hold ``[`` and ``]``,
which rich would take for markup.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import typer

from conveyor.errors import ConfigError, ConveyorError

# Exit codes: 1 a failed operation, 2 bad input (pipeline file, arguments), 3 a Prefect
# server that cannot be reached or answered an error, 130 an interrupt (as shells do).
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_SERVER = 3
EXIT_INTERRUPTED = 130


class ServerUnreachable(ConveyorError):
    """The Prefect server in PREFECT_API_URL does not answer."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"cannot reach the Prefect server at {url} ({reason})")


def log_path() -> Path:
    return Path(os.environ.get("CONVEYOR_HOME", ".conveyor")) / "cli.log"


def _log_detail(exc: BaseException) -> str:
    """Append the traceback to the CLI log; return a hint naming it, or '' if unwritable."""
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as log:
            log.write(f"--- {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC {sys.argv[1:]}\n")
            log.write("".join(traceback.format_exception(exc)))
    except OSError:
        return ""
    return f" (details in {path})"


def _api_url() -> str:
    return os.environ.get("PREFECT_API_URL", "") or "the Prefect server"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def explain(exc: BaseException) -> tuple[str, int] | None:
    """The line and exit code for a known error; None for one nobody foresaw."""
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    if isinstance(exc, ConfigError):
        return str(exc), EXIT_INPUT
    if isinstance(exc, ServerUnreachable):
        return str(exc), EXIT_SERVER
    if isinstance(exc, ConveyorError):
        return f"{type(exc).__name__}: {exc}", EXIT_FAILED
    if isinstance(exc, httpx.TransportError):
        # Conveyor's own clients translate httpx; a raw one here is the Prefect client's.
        return str(ServerUnreachable(_api_url(), _reason(exc))), EXIT_SERVER
    if isinstance(exc, ObjectNotFound):
        return "the Prefect server has no such object (deleted, or another server?)", EXIT_INPUT
    if isinstance(exc, PrefectHTTPStatusError):
        status = exc.response.status_code
        return f"the Prefect server at {_api_url()} answered {status}: {_reason(exc)}", EXIT_SERVER
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    return None


def report(exc: BaseException) -> int:
    """Print one line for ``exc`` (its detail to the log) and return the exit code."""
    known = explain(exc)
    hint = _log_detail(exc)
    if known is None:
        line, code = f"unexpected {type(exc).__name__}: {_reason(exc)}{hint}", EXIT_FAILED
    else:
        line, code = known
        if code == EXIT_SERVER and hint:
            line += hint
    print(line, file=sys.stderr)
    return code


@contextmanager
def boundary() -> Iterator[None]:
    """Turn every error raised inside into its one line and exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except BaseException as exc:
        raise typer.Exit(report(exc)) from None


def check_server(timeout: float = 3.0) -> str:
    """The API URL once its server answers /health; ``ServerUnreachable`` otherwise."""
    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        raise ServerUnreachable(
            "(none)",
            "PREFECT_API_URL is not set and no local stack runs here: run `conveyor up`, "
            "or point PREFECT_API_URL at your server",
        )
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
    except httpx.TransportError as exc:
        raise ServerUnreachable(url, _reason(exc) or "no answer") from None
    if response.status_code != 200:
        raise ServerUnreachable(url, f"/health answered {response.status_code}")
    return url
