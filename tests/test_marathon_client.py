"""The HTTP shapes the Marathon RAML defines, answered by httpx.MockTransport.

Only what the spec pins down is faked here (409/422/503 bodies, SSE framing); the
behaviour against a running Marathon is in test_marathon_driver.py on the simulator.
"""

from __future__ import annotations

import httpx
import pytest

from conveyor.clients.marathon import MarathonClient
from conveyor.errors import ConnectFailed, Locked, Rejected, ServerError, is_transient

APP = {"id": "/hello", "instances": 1}


def client_for(handler: httpx.MockTransport, retries: int = 3) -> MarathonClient:
    return MarathonClient(
        "http://marathon.test/service/marathon",
        transport=handler,
        retries=retries,
        sleep=lambda _: None,
    )


def test_409_is_locked_naming_the_deployments() -> None:
    body = {
        "message": "App is locked by one or more deployments.",
        "deployments": [{"id": "5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43"}],
    }
    c = client_for(httpx.MockTransport(lambda r: httpx.Response(409, json=body)))
    with pytest.raises(Locked) as info:
        c.put_app("/hello", APP)
    assert info.value.holders == ["5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43"]
    assert "5ed4c0c5" in str(info.value) and is_transient(info.value)


def test_422_is_terminal_with_marathons_details() -> None:
    body = {
        "message": "Object is not valid",
        "details": [
            {"path": "/upgradeStrategy/minimumHealthCapacity", "errors": ["is greater than 1"]}
        ],
    }
    c = client_for(httpx.MockTransport(lambda r: httpx.Response(422, json=body)))
    with pytest.raises(Rejected) as info:
        c.put_app("/hello", APP)
    assert "/upgradeStrategy/minimumHealthCapacity: is greater than 1" in str(info.value)
    assert info.value.details == body["details"] and not is_transient(info.value)


def test_503_is_retried_a_bounded_number_of_times() -> None:
    seen: list[str] = []

    def leader_change(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if len(seen) < 3:
            return httpx.Response(503, json={"message": "Could not determine the current leader"})
        return httpx.Response(
            200, json={"deploymentId": "d1", "version": "2024-01-01T00:00:00.000Z"}
        )

    c = client_for(httpx.MockTransport(leader_change))
    assert c.put_app("/hello", APP).deployment_id == "d1"
    assert seen == ["/service/marathon/v2/apps/hello"] * 3

    seen.clear()

    def unavailable(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(503)

    always = client_for(httpx.MockTransport(unavailable), retries=2)
    with pytest.raises(ServerError):
        always.deployments()
    assert len(seen) == 3


def test_connection_errors_are_retried_then_transient() -> None:
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ConnectFailed) as info:
        client_for(httpx.MockTransport(refuse), retries=2).deployments()
    assert len(calls) == 3 and is_transient(info.value)


def test_event_stream_framing() -> None:
    stream = (
        "event: event_stream_attached\n"
        'data: {"remoteAddress":"::1","eventType":"event_stream_attached"}\n\n'
        ": keep-alive\n\n"
        "event: health_status_changed_event\n"
        'data: {"appId":"/hello","alive":true,\n'
        'data: "eventType":"health_status_changed_event"}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"] == "text/event-stream"
        return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})

    with client_for(httpx.MockTransport(handler)).events() as events:
        got = list(events)
    assert [e.type for e in got] == ["event_stream_attached", "health_status_changed_event"]
    assert got[1].data == {
        "appId": "/hello",
        "alive": True,
        "eventType": "health_status_changed_event",
    }


def test_app_ids_are_paths_not_query_text() -> None:
    paths = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"app": APP})

    client_for(httpx.MockTransport(handler)).app("/team/hello", embed=("app.tasks",))
    assert paths == ["/service/marathon/v2/apps/team/hello?embed=app.tasks"]
