"""HTTP health waits and the checks an environment's tests run against a deployed app.

Everything goes over an injected ``httpx.Client`` through the shared HTTP boundary,
and every wait is bounded both in time and in number of requests, so a dead app
costs at most its configured timeout.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from conveyor.clients.http import send
from conveyor.config.environment import HttpCheck
from conveyor.errors import ConveyorError, HealthCheckFailed

# One unanswered request must not eat a whole health budget of a slow-starting app.
MAX_REQUEST_TIMEOUT_S = 5.0
OUTPUT_TAIL_CHARS = 4000


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome, written for the person reading the report."""

    name: str
    passed: bool
    detail: str
    duration_s: float


def _join(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def _probe_once(client: httpx.Client, url: str, expect_status: int, timeout_s: float) -> str | None:
    """None when ``url`` answers ``expect_status``; otherwise what went wrong."""
    request = client.build_request("GET", url, timeout=timeout_s)
    try:
        response = send(client, request, f"health check {url}")
    except ConveyorError as exc:
        return str(exc)
    if response.status_code == expect_status:
        return None
    return f"answered {response.status_code}, expected {expect_status}"


def wait_healthy(
    client: httpx.Client,
    urls: Sequence[str],
    path: str,
    expect_status: int = 200,
    timeout_s: float = 60.0,
    interval_s: float = 0.5,
) -> None:
    """Return once every ``url + path`` answers ``expect_status``.

    Raises ``HealthCheckFailed`` naming the first URL still failing and its last
    error or status when ``timeout_s`` has passed.
    """
    if not urls:
        raise HealthCheckFailed("health check: no instance URL to check")
    deadline = time.monotonic() + timeout_s
    max_rounds = math.ceil(timeout_s / interval_s) + 1
    pending = {_join(u, path): "not checked yet" for u in urls}
    for _ in range(max_rounds):
        for url in list(pending):
            remaining = deadline - time.monotonic()
            problem = _probe_once(
                client, url, expect_status, max(0.1, min(MAX_REQUEST_TIMEOUT_S, remaining))
            )
            if problem is None:
                del pending[url]
            else:
                pending[url] = problem
        if not pending:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval_s, remaining))
    url, problem = next(iter(pending.items()))
    others = f" (and {len(pending) - 1} more)" if len(pending) > 1 else ""
    raise HealthCheckFailed(f"{url}{others} not healthy after {timeout_s:g}s: {problem}")


def _judge(check: HttpCheck, response: httpx.Response) -> tuple[bool, str]:
    if response.status_code != check.expect_status:
        return False, f"answered {response.status_code}, expected {check.expect_status}"
    if check.expect_body_contains is not None and check.expect_body_contains not in response.text:
        snippet = response.text[:120].strip()
        return False, f"body lacks {check.expect_body_contains!r} (got {snippet!r})"
    return True, f"answered {response.status_code}"


def run_http_checks(
    client: httpx.Client, base_url: str, checks: Sequence[HttpCheck]
) -> list[CheckResult]:
    """Run every check once against ``base_url``; a failure never stops the others."""
    results = []
    for check in checks:
        url = _join(base_url, check.path)
        started = time.monotonic()
        try:
            response = send(client, client.build_request("GET", url), f"check {check.name!r}")
            passed, detail = _judge(check, response)
        except ConveyorError as exc:
            passed, detail = False, str(exc)
        results.append(
            CheckResult(check.name, passed, f"GET {url}: {detail}", time.monotonic() - started)
        )
    return results


def _tail(text: str) -> str:
    if len(text) <= OUTPUT_TAIL_CHARS:
        return text
    return "..." + text[-OUTPUT_TAIL_CHARS:]


def _run_captured(
    cmd: Sequence[str], env: dict[str, str], timeout: float
) -> tuple[int | None, str]:
    """Exit status (None on timeout) and combined output of ``cmd``.

    The command gets its own process group so a timeout also kills whatever it
    started; otherwise a grandchild holding the pipe would keep us waiting.
    """
    proc = subprocess.Popen(
        list(cmd),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        return None, out.decode(errors="replace")


def run_test_command(
    cmd: Sequence[str],
    env_urls: Sequence[str],
    timeout: float,
    extra_env: Mapping[str, str] | None = None,
) -> CheckResult:
    """Run the environment's test command with the app's URLs in its environment.

    CONVEYOR_APP_URL is the first URL, CONVEYOR_APP_URLS all of them space separated;
    ``extra_env`` adds more (every member's ``CONVEYOR_URL_<SERVICE>``).
    The detail ends with the tail of the command's combined output.
    """
    name = "test command: " + " ".join(cmd)
    env = {**os.environ, **(extra_env or {})}
    env["CONVEYOR_APP_URL"] = env_urls[0] if env_urls else ""
    env["CONVEYOR_APP_URLS"] = " ".join(env_urls)
    started = time.monotonic()
    try:
        status, output = _run_captured(cmd, env, timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return CheckResult(name, False, f"cannot run: {exc}", time.monotonic() - started)
    elapsed = time.monotonic() - started
    if status is None:
        return CheckResult(
            name, False, f"timed out after {timeout:g}s\n{_tail(output)}".rstrip(), elapsed
        )
    detail = f"exit status {status}\n{_tail(output)}".rstrip()
    return CheckResult(name, status == 0, detail, elapsed)


def markdown_table(results: Sequence[CheckResult]) -> str:
    """The results as a Markdown table (what a Prefect table artifact shows)."""
    lines = ["| check | result | detail | seconds |", "| --- | --- | --- | --- |"]
    for r in results:
        detail = r.detail.splitlines()[0] if r.detail else ""
        detail = detail.replace("|", "\\|")
        lines.append(
            f"| {r.name} | {'passed' if r.passed else 'FAILED'} | {detail} | {r.duration_s:.2f} |"
        )
    return "\n".join(lines)
