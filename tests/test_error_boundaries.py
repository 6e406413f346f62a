"""The docker-py boundary maps each failure once, and the tree keeps verdicts apart."""

from __future__ import annotations

import docker.errors
import pytest
import requests
import urllib3.exceptions

from conveyor import errors
from conveyor.clients.docker_engine import engine_errors


def _api_error(
    status: int, explanation: str, cls: type[docker.errors.APIError] = docker.errors.APIError
) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return cls("engine said no", response=response, explanation=explanation)


@pytest.mark.parametrize(
    ("raised", "expected", "transient"),
    [
        (_api_error(401, "unauthorized"), errors.AuthenticationFailed, False),
        # The engine wraps a registry's refusal of a pull in a 500 or 404 of its own.
        (_api_error(500, "Head ...: unauthorized: authentication required"), errors.AuthenticationFailed, False),
        (_api_error(403, "forbidden"), errors.PermissionDenied, False),
        (_api_error(404, "No such container: x"), errors.NotFound, False),
        (_api_error(404, "No such image: x", docker.errors.ImageNotFound), errors.NotFound, False),
        (_api_error(409, "name already in use"), errors.Rejected, False),
        (_api_error(503, "engine busy"), errors.ServerError, True),
        (requests.exceptions.ReadTimeout("read timed out"), errors.RequestTimeout, True),
        (requests.exceptions.ConnectionError("refused"), errors.ConnectFailed, True),
        (urllib3.exceptions.ReadTimeoutError(urllib3.HTTPConnectionPool("127.0.0.1"), "/push", "read timed out"), errors.RequestTimeout, True),
        (urllib3.exceptions.ProtocolError("connection broken"), errors.ConnectFailed, True),
    ],
)  # fmt: skip
def test_each_docker_failure_maps_to_one_class(
    raised: Exception, expected: type[errors.ConveyorError], transient: bool
) -> None:
    with pytest.raises(expected) as info, engine_errors("push of r:1"):
        raise raised
    assert type(info.value) is expected
    assert errors.is_transient(info.value) is transient
    assert "push of r:1" in str(info.value)


@pytest.mark.parametrize(
    "verdict",
    [
        errors.ScanBlocked,
        errors.VulnDbMissing,
        errors.PlacementViolation,
        errors.IntegrationTestsFailed,
        errors.VerificationFailed,
        errors.ApprovalRejected,
        errors.RolledBack,
    ],
)
def test_verdicts_are_terminal_and_apart_from_systems_errors(verdict: type[Exception]) -> None:
    assert issubclass(verdict, errors.Verdict) and issubclass(verdict, errors.TerminalError)
    assert not errors.is_transient(verdict("refused"))


def test_systems_errors_are_not_verdicts() -> None:
    for cls in (errors.ConnectFailed, errors.ServerError, errors.NotFound, errors.DeploymentFailed):
        assert not issubclass(cls, errors.Verdict)
    assert issubclass(errors.PreflightFailed, errors.Verdict)
