from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conveyor.config.environment import HttpCheck
from conveyor.errors import HealthCheckFailed
from conveyor.probe import markdown_table, run_http_checks, run_test_command, wait_healthy


class _App(BaseHTTPRequestHandler):
    # Class-level switches the tests flip: when /health turns healthy, what it says.
    healthy_after = 0.0
    started = 0.0

    @classmethod
    def turn_healthy_after(cls, seconds: float) -> None:
        cls.started = time.monotonic()
        cls.healthy_after = seconds

    def do_GET(self) -> None:
        if self.path == "/health":
            ok = time.monotonic() - self.started >= self.healthy_after
            self._answer(200 if ok else 503, b"ok\n" if ok else b"starting\n")
        elif self.path == "/version":
            self._answer(200, b"1.2.3\n")
        else:
            self._answer(404, b"no such page\n")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app() -> Iterator[type[_App]]:
    handler = type("Handler", (_App,), {"started": time.monotonic(), "healthy_after": 0.0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def app_url(app: type[_App]) -> str:
    return str(app.url)  # type: ignore[attr-defined]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def test_wait_healthy_returns_once_the_app_turns_healthy(
    app: type[_App], app_url: str, client: httpx.Client
) -> None:
    app.turn_healthy_after(0.6)
    started = time.monotonic()
    wait_healthy(client, [app_url], "/health", 200, timeout_s=10, interval_s=0.1)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5


def test_wait_healthy_names_the_url_and_last_status(
    app: type[_App], app_url: str, client: httpx.Client
) -> None:
    app.turn_healthy_after(3600)
    started = time.monotonic()
    with pytest.raises(HealthCheckFailed) as err:
        wait_healthy(client, [app_url], "/health", 200, timeout_s=1.0, interval_s=0.2)
    assert time.monotonic() - started < 3
    assert f"{app_url}/health" in str(err.value)
    assert "503" in str(err.value)


def test_wait_healthy_bounded_when_nothing_listens(port: int, client: httpx.Client) -> None:
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(HealthCheckFailed) as err:
        wait_healthy(client, [url], "/health", timeout_s=1.0, interval_s=0.25)
    assert time.monotonic() - started < 3
    assert "cannot connect" in str(err.value)
    assert url in str(err.value)


def test_wait_healthy_needs_every_url(app_url: str, port: int, client: httpx.Client) -> None:
    dead = f"http://127.0.0.1:{port}"
    with pytest.raises(HealthCheckFailed) as err:
        wait_healthy(client, [app_url, dead], "/health", timeout_s=0.8, interval_s=0.2)
    assert dead in str(err.value)
    assert app_url + "/health" not in str(err.value)


def test_http_checks_report_each_result(app_url: str, client: httpx.Client) -> None:
    checks = [
        HttpCheck(name="health", path="/health", expect_body_contains="ok"),
        HttpCheck(name="version", path="/version", expect_body_contains="9.9"),
        HttpCheck(name="missing page", path="/nope"),
        HttpCheck(name="404 expected", path="/nope", expect_status=404),
    ]
    results = run_http_checks(client, app_url, checks)
    assert [r.passed for r in results] == [True, False, False, True]
    assert "lacks '9.9'" in results[1].detail
    assert "answered 404, expected 200" in results[2].detail
    assert all(r.duration_s >= 0 for r in results)
    table = markdown_table(results)
    assert "| version | FAILED |" in table


def test_http_checks_survive_a_dead_app(port: int, client: httpx.Client) -> None:
    results = run_http_checks(client, f"http://127.0.0.1:{port}", [HttpCheck(name="h", path="/")])
    assert not results[0].passed
    assert "cannot connect" in results[0].detail


def test_test_command_sees_the_app_urls() -> None:
    script = (
        "import os; print(os.environ['CONVEYOR_APP_URL']); print(os.environ['CONVEYOR_APP_URLS'])"
    )
    result = run_test_command([sys.executable, "-c", script], ["http://a:1", "http://b:2"], 30)
    assert result.passed
    assert "http://a:1\nhttp://a:1 http://b:2" in result.detail


def test_test_command_failure_keeps_the_output_tail() -> None:
    script = "import sys; print('x' * 10000); print('the end'); sys.exit(3)"
    result = run_test_command([sys.executable, "-c", script], ["http://a:1"], 30)
    assert not result.passed
    assert result.detail.startswith("exit status 3")
    assert result.detail.endswith("the end")
    assert len(result.detail) < 5000


def test_test_command_timeout_kills_it() -> None:
    started = time.monotonic()
    result = run_test_command(["/bin/sh", "-c", "echo begun; sleep 30 & wait"], ["http://a:1"], 1)
    assert time.monotonic() - started < 8
    assert not result.passed
    assert "timed out after 1s" in result.detail
    assert "begun" in result.detail


def test_test_command_not_found() -> None:
    result = run_test_command(["/nonexistent/run-tests"], ["http://a:1"], 5)
    assert not result.passed
    assert "cannot run" in result.detail
