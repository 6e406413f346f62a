"""Marathon's REST API v2 (the subset a deploy needs), over an injectable httpx transport.

Errors become conveyor errors here and nowhere else: 409 is ``Locked`` naming the
deployments that hold the app, 400/422 are ``Rejected`` with Marathon's details, and a
503 or a lost connection (a leader election) is retried a few times with backoff
before it surfaces as a ``TransientError``.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from conveyor.clients.http import error_for_status, send, tls_context, translate_transport_errors
from conveyor.clients.marathon_model import (
    App,
    AppVersions,
    Definition,
    Deployment,
    DeploymentRef,
    Group,
)
from conveyor.errors import (
    ConveyorError,
    Locked,
    NotFound,
    Rejected,
    RequestTimeout,
    ServerError,
    TransportError,
)

SYSTEM = "Marathon"
RETRY_STATUSES = (502, 503, 504)
_DEPLOYMENTS = TypeAdapter(list[Deployment])
T = TypeVar("T")


@dataclass(frozen=True)
class Event:
    """One server-sent event of ``/v2/events``."""

    type: str
    data: dict[str, object]


def tls_verify(verify_tls: bool, ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """httpx's ``verify`` from the pipeline's settings: verified by default."""
    if not verify_tls:
        return False
    return tls_context(ca_bundle)


def _app_path(app_id: str) -> str:
    return "/v2/apps/" + quote(app_id.strip("/"), safe="/")


def _error(response: httpx.Response) -> ConveyorError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    message = str(body.get("message") or response.text[:200])
    if response.status_code == 409:
        holders = [str(d.get("id")) for d in body.get("deployments") or [] if isinstance(d, dict)]
        text = f"{SYSTEM}: {response.request.method} {response.request.url.path} answered 409: "
        text += message + (f" (held by deployments {', '.join(holders)})" if holders else "")
        return Locked(text, holders)
    if response.status_code in (400, 422):
        details = body.get("details") or []
        lines = [
            f"{d.get('path', '?')}: {'; '.join(map(str, d.get('errors') or []))}"
            for d in details
            if isinstance(d, dict)
        ]
        base = error_for_status(SYSTEM, response, message)
        return Rejected(str(base) + "".join(f"\n  {line}" for line in lines), details)
    return error_for_status(SYSTEM, response, message)


def _parse(validate: Callable[[Any], T], method: str, path: str, body: object) -> T:
    """``body`` as a model; one of another shape is the server's fault (502, retried)."""
    try:
        return validate(body)
    except (ValidationError, TypeError) as exc:
        detail = str(exc).splitlines()[:3]
        raise ServerError(
            f"{SYSTEM}: {method} {path} answered an unexpected body: {' '.join(detail)}", 502
        ) from None


class MarathonClient:
    """Marathon at ``base_url`` (Marathon itself, or ``<cluster>/service/marathon``)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            auth=auth,
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(timeout_s),
            headers={"Accept": "application/json"},
        )
        self._retries = retries
        self._backoff_s = backoff_s
        self._sleep = sleep

    def close(self) -> None:
        self.http.close()

    def _request(
        self, method: str, path: str, *, retry_timeouts: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send with bounded retries of what a leader change causes; raise on failure."""
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = send(self.http, self.http.build_request(method, path, **kwargs), SYSTEM)
            except RequestTimeout:
                if last or not retry_timeouts:
                    raise
            except TransportError:
                if last:
                    raise
            else:
                if response.is_success:
                    return response
                error = _error(response)
                if response.status_code not in RETRY_STATUSES or last:
                    raise error
            self._sleep(self._backoff_s * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _json(self, method: str, path: str, **kwargs: Any) -> object:
        response = self._request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            body: object = response.json()
        except ValueError:
            raise ServerError(f"{SYSTEM}: {method} {path} did not answer JSON", 502) from None
        return body

    def app(self, app_id: str, embed: tuple[str, ...] = ()) -> App:
        """The app with its status; ``embed`` as in the API (``app.tasks``...)."""
        path = _app_path(app_id)
        body = self._json("GET", path, params=[("embed", e) for e in embed])
        return _parse(App.of, "GET", path, body.get("app") if isinstance(body, dict) else None)

    def find_app(self, app_id: str, embed: tuple[str, ...] = ()) -> App | None:
        """The app, or None when Marathon has no app with this id."""
        try:
            return self.app(app_id, embed)
        except NotFound:
            return None

    def put_app(self, app_id: str, definition: Definition, force: bool = False) -> DeploymentRef:
        """Create or replace the app; the answer names the deployment and the new version."""
        params = {"force": "true"} if force else {}
        path = _app_path(app_id)
        body = self._json("PUT", path, json=definition, params=params)
        return _parse(DeploymentRef.model_validate, "PUT", path, body)

    def versions(self, app_id: str) -> list[str]:
        """The app's versions, newest first."""
        path = _app_path(app_id) + "/versions"
        return _parse(AppVersions.model_validate, "GET", path, self._json("GET", path)).versions

    def app_version(self, app_id: str, version: str) -> App:
        path = _app_path(app_id) + "/versions/" + quote(version, safe="")
        return _parse(App.of, "GET", path, self._json("GET", path))

    def find_group(self, group_id: str) -> Group | None:
        """The group with its apps, or None when Marathon has no such group."""
        path = "/v2/groups/" + group_id.strip("/")
        try:
            body = self._json("GET", path, params=[("embed", "group.apps.tasks")])
        except NotFound:
            return None
        return _parse(Group.model_validate, "GET", path, body)

    def group_versions(self, group_id: str) -> list[str]:
        """The group's stored versions, newest first."""
        path = "/v2/groups/" + group_id.strip("/") + "/versions"
        body = self._json("GET", path)
        return sorted((str(v) for v in body), reverse=True) if isinstance(body, list) else []

    def group_version(self, group_id: str, version: str) -> Group:
        path = "/v2/groups/" + group_id.strip("/") + "/versions/" + quote(version, safe="")
        return _parse(Group.model_validate, "GET", path, self._json("GET", path))

    def put_group(self, group_id: str, body: Definition, force: bool = False) -> DeploymentRef:
        """Create or replace the group (``{"version": V}`` reverts it to version V)."""
        params = {"force": "true"} if force else {}
        path = "/v2/groups/" + group_id.strip("/")
        answer = self._json("PUT", path, json=body, params=params, retry_timeouts=False)
        return _parse(DeploymentRef.model_validate, "PUT", path, answer)

    def deployments(self) -> list[Deployment]:
        path = "/v2/deployments"
        return _parse(_DEPLOYMENTS.validate_python, "GET", path, self._json("GET", path))

    def delete_deployment(self, deployment_id: str, force: bool = False) -> DeploymentRef | None:
        """Without force Marathon rolls the deployment back (a new deployment, returned)."""
        params = {"force": "true"} if force else {}
        path = "/v2/deployments/" + quote(deployment_id, safe="")
        # Not repeated after a timeout: a second revert could undo the first.
        body = self._json("DELETE", path, params=params, retry_timeouts=False)
        if not isinstance(body, dict) or "deploymentId" not in body:
            return None
        return _parse(DeploymentRef.model_validate, "DELETE", path, body)

    @contextmanager
    def events(
        self, event_types: tuple[str, ...] = (), read_timeout_s: float = 2.0
    ) -> Iterator[Iterator[Event]]:
        """Attach to ``/v2/events``; a quiet stream raises ``RequestTimeout`` after the timeout."""
        timeout = httpx.Timeout(self.http.timeout.connect or 10.0, read=read_timeout_s)
        request = self.http.build_request(
            "GET",
            "/v2/events",
            params=[("event_type", t) for t in event_types],
            headers={"Accept": "text/event-stream"},
            timeout=timeout,
        )
        response = send(self.http, request, SYSTEM, stream=True)
        try:
            if not response.is_success:
                response.read()
                raise _error(response)
            yield _parse_sse(response)
        finally:
            response.close()


def _parse_sse(response: httpx.Response) -> Iterator[Event]:
    kind, data = "message", []
    with translate_transport_errors(SYSTEM):
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    kind = value
                elif field == "data":
                    data.append(value)
                continue
            if data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    payload = {}
                yield Event(kind, payload if isinstance(payload, dict) else {})
            kind, data = "message", []


class EventWatch:
    """Wakes a waiter within moments of a Marathon event about one app.

    A background thread follows ``/v2/events`` and sets a flag on every event that
    names the app (or any deployment event); the waiter re-reads the REST state then,
    so a missed or reordered event costs at most one safety interval, never
    correctness. A quiet stream is re-attached after ``read_timeout_s``; repeated
    failures give up and leave the waiter polling.
    """

    RELEVANT_PREFIXES = ("deployment_",)
    MAX_FAILURES = 3

    def __init__(
        self, client: MarathonClient, app_id: str, deadline: float, read_timeout_s: float = 2.0
    ) -> None:
        self._client = client
        self._app_id = "/" + app_id.strip("/")
        self._deadline = deadline
        self._read_timeout_s = read_timeout_s
        self._changed = threading.Event()
        self._stop = threading.Event()
        self.attached = threading.Event()
        self.events_seen = 0
        self._thread = threading.Thread(target=self._run, name="marathon-events", daemon=True)

    def __enter__(self) -> EventWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        # No join: the reader leaves at its next read timeout, the waiter need not wait.
        self._stop.set()

    def _relevant(self, event: Event) -> bool:
        if event.type.startswith(self.RELEVANT_PREFIXES):
            return True
        return "/" + str(event.data.get("appId", "")).strip("/") == self._app_id

    def _follow(self) -> int:
        seen = 0
        with self._client.events(read_timeout_s=self._read_timeout_s) as events:
            self.attached.set()
            # Whatever happened while detached is unknown: have the waiter look.
            self._changed.set()
            for event in events:
                seen += 1
                self.events_seen += 1
                if self._relevant(event):
                    self._changed.set()
                if self._stop.is_set():
                    break
        return seen

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                if self._follow() > 0:
                    self._stop.wait(0.1)  # the server closed a live stream: re-attach, gently
                    continue
            except RequestTimeout:
                continue  # a quiet stream, not a broken one
            except ConveyorError:
                pass
            # Refused, broken, or closed before a single event: back off, then give up.
            failures += 1
            self.attached.clear()
            if failures >= self.MAX_FAILURES:
                break
            self._stop.wait(0.2 * 2**failures)
        self.attached.clear()

    def wait(self, timeout: float) -> bool:
        """Block until an event arrives or ``timeout`` passes; True when woken by an event."""
        woke = self._changed.wait(max(timeout, 0.0))
        self._changed.clear()
        return woke
