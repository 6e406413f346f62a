"""Authentication to an OCI distribution registry: Basic, and the Bearer token dance.

A registry answers 401 with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``;
the client fetches a token for that scope from the realm and repeats the request. The
way the token is fetched is pluggable (``TokenSource``), because ACR swaps an AAD token
for a refresh token first (see ``conveyor.clients.acr``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol

import httpx
from pydantic import SecretStr

from conveyor.clients.http import error_for_status

_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
_NAME_RE = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags|referrers)/")
_WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})

TokenFlow = Generator[httpx.Request, httpx.Response, str]


@dataclass(frozen=True)
class Challenge:
    scheme: str
    realm: str
    service: str | None = None
    scope: str | None = None

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        scheme, _, rest = header.strip().partition(" ")
        params = {m.group(1).lower(): m.group(2) or m.group(3) for m in _PARAM_RE.finditer(rest)}
        if not scheme:
            return None
        return cls(
            scheme.lower(), params.get("realm", ""), params.get("service"), params.get("scope")
        )


def basic_header(username: str, password: SecretStr) -> str:
    raw = f"{username}:{password.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class TokenSource(Protocol):
    """Fetches a Bearer token for a challenge, yielding the HTTP requests it needs."""

    def flow(self, challenge: Challenge) -> TokenFlow: ...


class BasicTokenSource:
    """The distribution token protocol: GET realm?service=&scope= with optional Basic auth."""

    def __init__(self, username: str | None, password: SecretStr | None) -> None:
        self.username = username
        self._password = password

    def __repr__(self) -> str:
        return f"BasicTokenSource(username={self.username!r})"

    def flow(self, challenge: Challenge) -> TokenFlow:
        params = {
            k: v for k, v in (("service", challenge.service), ("scope", challenge.scope)) if v
        }
        request = httpx.Request("GET", challenge.realm, params=params)
        if self.username is not None and self._password is not None:
            request.headers["Authorization"] = basic_header(self.username, self._password)
        response = yield request
        response.read()
        if response.status_code != 200:
            raise error_for_status("registry token endpoint", response, "token request refused")
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise error_for_status("registry token endpoint", response, "answer holds no token")
        return str(token)


def _scope_key(request: httpx.Request) -> str:
    """Tokens are scoped per repository and action; requests sharing a key share a token."""
    m = _NAME_RE.match(request.url.path)
    name = m.group(1) if m else ""
    write = request.method in _WRITE_METHODS
    mount_from = request.url.params.get("from", "")
    return f"{name}|{'push' if write else 'pull'}|{mount_from}"


class RegistryAuth(httpx.Auth):
    """Answers 401 challenges once per request; caches tokens per scope key."""

    def __init__(
        self,
        username: str | None = None,
        password: SecretStr | None = None,
        token_source: TokenSource | None = None,
    ) -> None:
        self.username = username
        self._password = password
        self._tokens: dict[str, str] = {}
        self._basic = False
        self.token_source: TokenSource = token_source or BasicTokenSource(username, password)

    def __repr__(self) -> str:
        return f"RegistryAuth(username={self.username!r})"

    def _apply(self, request: httpx.Request, key: str) -> None:
        if key in self._tokens:
            request.headers["Authorization"] = f"Bearer {self._tokens[key]}"
        elif self._basic and self.username is not None and self._password is not None:
            request.headers["Authorization"] = basic_header(self.username, self._password)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = _scope_key(request)
        self._apply(request, key)
        sent = "Authorization" in request.headers
        response = yield request
        if response.status_code != 401:
            return
        challenge = Challenge.parse(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            return
        if challenge.scheme == "basic":
            # Refused credentials are final; a request that went out before another
            # thread learnt the registry wants Basic carried none, and is sent again.
            if sent or self.username is None:
                return
            self._basic = True
        elif challenge.scheme == "bearer":
            self._tokens[key] = yield from self.token_source.flow(challenge)
        else:
            return
        # A streamed upload body cannot be sent twice; callers fetch a token first.
        request.headers.pop("Authorization", None)
        self._apply(request, key)
        yield request
