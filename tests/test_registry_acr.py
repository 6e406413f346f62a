"""Protocol-shape tests of the ACR integration (ACR itself cannot run here).

A tiny HTTPS server on 127.0.0.1 answers with the request and response shapes ACR
documents: the Bearer challenge, POST /oauth2/exchange (AAD access token -> ACR refresh
token), POST /oauth2/token (refresh token -> access token for a scope), and PATCH
/acr/v1/<repo>/_manifests/<digest> for the manifest's changeable attributes. Both our
OCI client and the real azure-containerregistry SDK talk to it over TLS.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from conveyor.clients.acr import AcrManifestLocker, AcrTokenSource
from conveyor.clients.registry import RegistryClient
from conveyor.errors import AuthenticationFailed, NotFound
from conveyor.promotion import TagPolicy, promote
from tests.registry_support import ServedInThread, make_ca

DIGEST = "sha256:" + "ab" * 32
MANIFEST = b'{"schemaVersion":2}'


class FakeCredential:
    """An azure-identity style TokenCredential handing out a fixed AAD token."""

    def __init__(self, fail: bool = False) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.fail = fail

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        if self.fail:
            raise ClientAuthenticationError("AADSTS7000215: invalid client secret")
        return AccessToken("aad-token", int(time.time()) + 3600)


def _jwt_with_exp() -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'exp': int(time.time()) + 10800})}.sig"


class FakeAcr(ServedInThread):
    def __init__(self, directory: Path) -> None:
        self.ca, cert, key = make_ca(directory)
        self.calls: list[tuple[str, str, dict[str, list[str]]]] = []
        self.refresh_token = _jwt_with_exp()
        self.access: dict[str, str] = {}
        self.locked: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, str] = {"app:1.0.0": DIGEST}
        super().__init__(self._handler())
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        acr = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def reply(
                self, status: int, body: Any = None, headers: dict[str, str] | None = None
            ) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            @property
            def route(self) -> str:
                # The SDK adds ?api-version=... and percent-encodes the digest's colon.
                return unquote(urlparse(self.path).path)

            def form(self) -> dict[str, list[str]]:
                length = int(self.headers.get("Content-Length", 0))
                return parse_qs(self.rfile.read(length).decode())

            def do_POST(self) -> None:
                form = self.form()
                acr.calls.append(("POST", self.route, form))
                if self.route == "/oauth2/exchange":
                    ok = form.get("grant_type") == ["access_token"]
                    ok = ok and form.get("access_token") == ["aad-token"]
                    if not ok or form.get("service") != [acr.host]:
                        return self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    return self.reply(200, {"refresh_token": acr.refresh_token})
                if self.route == "/oauth2/token":
                    ok = form.get("grant_type") == ["refresh_token"]
                    if not ok or form.get("refresh_token") != [acr.refresh_token]:
                        return self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    token = "acr-" + uuid.uuid4().hex
                    acr.access[token] = form["scope"][0]
                    return self.reply(200, {"access_token": token})
                self.reply(404)

            def authorized(self, scope: str) -> bool:
                header = self.headers.get("Authorization", "")
                granted = acr.access.get(header.removeprefix("Bearer "))
                if granted == scope:
                    return True
                realm = (
                    f'Bearer realm="{acr.url}/oauth2/token",service="{acr.host}",scope="{scope}"'
                )
                self.reply(401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": realm})
                return False

            def do_HEAD(self) -> None:
                acr.calls.append(("HEAD", self.route, {}))
                repo, _, ref = self.route.removeprefix("/v2/").partition("/manifests/")
                if not self.authorized(f"repository:{repo}:pull"):
                    return
                digest = acr.tags.get(f"{repo}:{ref}", ref if ref == DIGEST else None)
                if digest is None:
                    return self.reply(404)
                headers = {"Docker-Content-Digest": digest}
                self.reply(200, None, headers)

            do_GET = do_HEAD

            def do_PATCH(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                acr.calls.append(("PATCH", self.route, {}))
                repo, _, digest = self.route.removeprefix("/acr/v1/").partition("/_manifests/")
                if not self.authorized(f"repository:{repo}:metadata_write"):
                    return
                if digest != DIGEST:
                    return self.reply(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})
                attrs = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True}
                attrs.update(body)
                acr.locked[digest] = attrs
                self.reply(
                    200,
                    {
                        "registry": acr.host,
                        "imageName": repo,
                        "manifest": {
                            "digest": digest,
                            "createdTime": "2024-01-01T00:00:00Z",
                            "lastUpdateTime": "2024-01-01T00:00:00Z",
                            "changeableAttributes": attrs,
                        },
                    },
                )

        return Handler


@pytest.fixture
def acr(tmp_path: Path) -> Iterator[FakeAcr]:
    with FakeAcr(tmp_path) as fake:
        yield fake


def test_oci_client_exchanges_aad_token_for_acr_tokens(acr: FakeAcr) -> None:
    credential = FakeCredential()
    source = AcrTokenSource(credential, tenant="tenant-1")
    with RegistryClient(acr.url, ca_bundle=acr.ca, token_source=source) as client:
        assert client.resolve("app", "1.0.0") == DIGEST
        assert client.resolve("app", "missing") is None
    exchange = [c for c in acr.calls if c[1] == "/oauth2/exchange"]
    assert len(exchange) == 1  # the refresh token is reused
    assert exchange[0][2]["tenant"] == ["tenant-1"]
    assert exchange[0][2]["service"] == [acr.host]
    assert credential.scopes == [("https://containerregistry.azure.net/.default",)]
    assert set(acr.access.values()) == {"repository:app:pull"}
    assert "aad-token" not in repr(source) + repr(client)


def test_aad_failure_is_an_authentication_error(acr: FakeAcr) -> None:
    source = AcrTokenSource(FakeCredential(fail=True))
    with (
        RegistryClient(acr.url, ca_bundle=acr.ca, token_source=source) as client,
        pytest.raises(AuthenticationFailed, match="AADSTS7000215"),
    ):
        client.resolve("app", "1.0.0")
    assert not [c for c in acr.calls if c[1].startswith("/oauth2/")]


def test_sdk_locks_the_promoted_manifest(acr: FakeAcr) -> None:
    locker = AcrManifestLocker(acr.url, FakeCredential(), connection_verify=str(acr.ca))
    try:
        source = AcrTokenSource(FakeCredential())
        with RegistryClient(acr.url, ca_bundle=acr.ca, token_source=source) as client:
            result = promote(client, "app", DIGEST, "1.0.0", policy=TagPolicy(), locker=locker)
    finally:
        locker.close()
    assert result.locked and not result.changed
    assert acr.locked[DIGEST] == {
        "deleteEnabled": False,
        "writeEnabled": False,
        "readEnabled": True,
    }
    patch = [c for c in acr.calls if c[0] == "PATCH"]
    assert patch[-1][1] == f"/acr/v1/app/_manifests/{DIGEST}"
    assert "repository:app:metadata_write" in acr.access.values()


def test_sdk_errors_are_translated(acr: FakeAcr) -> None:
    locker = AcrManifestLocker(acr.url, FakeCredential(fail=True), connection_verify=str(acr.ca))
    with pytest.raises(AuthenticationFailed):
        locker.lock("app", DIGEST)
    with pytest.raises(NotFound):
        AcrManifestLocker(acr.url, FakeCredential(), connection_verify=str(acr.ca)).lock(
            "app", "sha256:" + "00" * 32
        )
    locker.close()
