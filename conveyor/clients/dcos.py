"""DC/OS: service-account login and the cluster reads the pre-flight needs.

A service account proves itself with a short-lived RS256 JWT ``{uid, exp}`` signed by its
private key; IAM answers with a session token that every later request carries as
``Authorization: token=<token>`` (not Bearer). When the session expires mid-run, IAM
answers 401: the auth flow logs in again once and repeats the request once. A second
401 is the caller's answer - a retry loop against IAM would only hide a revoked account.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import Literal, TypeVar

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from conveyor.clients.http import error_for_status, send
from conveyor.errors import AuthenticationFailed, Rejected

LOGIN_PATH = "/acs/api/v1/auth/login"
SYSTEM = "DC/OS"


def _peer_message(response: httpx.Response) -> str:
    """IAM errors carry ``title``/``description``/``code``; Marathon's carry ``message``."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if not isinstance(body, dict):
        return ""
    parts = [str(body[k]) for k in ("code", "title", "description", "message") if body.get(k)]
    return "; ".join(parts)


class DcosServiceAccountAuth(httpx.Auth):
    """httpx auth flow for a DC/OS service account; one instance per cluster, thread-safe."""

    def __init__(
        self, login_url: str, uid: str, private_key: SecretStr, login_token_ttl_s: int = 300
    ) -> None:
        self.login_url = login_url
        self.uid = uid
        self._private_key = private_key
        self._ttl = login_token_ttl_s
        self._token: str | None = None
        self._lock = threading.Lock()
        # How many logins were sent: the tests prove there is no retry storm with it.
        self.logins = 0

    def __repr__(self) -> str:
        return f"DcosServiceAccountAuth(uid={self.uid!r}, login_url={self.login_url!r})"

    def _login_token(self) -> str:
        claims = {"uid": self.uid, "exp": int(time.time()) + self._ttl}
        try:
            return jwt.encode(claims, self._private_key.get_secret_value(), algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise AuthenticationFailed(
                f"{SYSTEM}: the private key of service account {self.uid!r} cannot sign a "
                f"login token ({type(exc).__name__}); it must be an RSA private key in PEM"
            ) from None

    def _login(self, stale: str | None) -> Generator[httpx.Request, httpx.Response, str]:
        with self._lock:
            if self._token is not None and self._token != stale:
                return self._token  # another thread logged in meanwhile
            body = {"uid": self.uid, "token": self._login_token()}
            self.logins += 1
            response = yield httpx.Request("POST", self.login_url, json=body)
            response.read()
            if response.status_code in (401, 403):
                raise AuthenticationFailed(
                    f"{SYSTEM}: login of service account {self.uid!r} refused "
                    f"({response.status_code}: {_peer_message(response) or 'no reason given'}); "
                    "check that its public key in IAM matches the configured private key"
                )
            if not response.is_success:
                raise error_for_status(SYSTEM, response, _peer_message(response))
            try:
                token = str(response.json()["token"])
            except (ValueError, KeyError, TypeError):
                raise Rejected(f"{SYSTEM}: login answered without a token") from None
            self._token = token
            return token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._token
        if token is None:
            token = yield from self._login(None)
        request.headers["Authorization"] = f"token={token}"
        response = yield request
        if response.status_code != 401:
            return
        fresh = yield from self._login(token)
        request.headers["Authorization"] = f"token={fresh}"
        yield request


T = TypeVar("T")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Resources(_Body):
    """A Mesos agent's resources (or the part its tasks use); ``ports`` in range notation."""

    cpus: float = 0.0
    mem: float = 0.0
    ports: str | None = None


class Agent(_Body):
    """One agent of ``/mesos/master/slaves``."""

    id: str = ""
    hostname: str = ""
    active: bool = True
    resources: Resources = Field(default_factory=Resources)
    used_resources: Resources = Field(default_factory=Resources)

    @property
    def name(self) -> str:
        return self.hostname or self.id

    def free(self, resource: Literal["cpus", "mem"]) -> float:
        total = getattr(self.resources, resource)
        used = getattr(self.used_resources, resource)
        return max(float(total) - float(used), 0.0)


class Unit(_Body):
    """One system unit of ``/system/health/v1/units``; a health of 0 is healthy."""

    id: str = ""
    name: str = ""
    health: int = 0
    output: str = ""
    description: str = ""


class DcosVersion(_Body):
    version: str | None = None


class DcosClient:
    """The cluster reads of the pre-flight, through the admin router."""

    def __init__(self, client: httpx.Client) -> None:
        # Shares the caller's client: same auth session, TLS trust and timeouts as Marathon.
        self._client = client

    def _get(self, path: str) -> object:
        response = send(self._client, self._client.build_request("GET", path), SYSTEM)
        if not response.is_success:
            raise error_for_status(SYSTEM, response, _peer_message(response))
        try:
            body: object = response.json()
        except ValueError:
            raise Rejected(f"{SYSTEM}: GET {path} did not answer JSON") from None
        return body

    def _list(self, path: str, key: str, model: Callable[[object], T]) -> list[T]:
        body = self._get(path)
        items = body.get(key) if isinstance(body, dict) else None
        try:
            return [model(i) for i in items or [] if isinstance(i, dict)]
        except ValidationError as exc:
            raise Rejected(
                f"{SYSTEM}: GET {path} answered an unexpected {key} entry: {exc}"
            ) from None

    def version(self) -> DcosVersion:
        body = self._get("/dcos-metadata/dcos-version.json")
        try:
            return DcosVersion.model_validate(body if isinstance(body, dict) else {})
        except ValidationError:
            return DcosVersion()

    def units(self) -> list[Unit]:
        return self._list("/system/health/v1/units", "units", Unit.model_validate)

    def agents(self) -> list[Agent]:
        return self._list("/mesos/master/slaves", "slaves", Agent.model_validate)
