"""The OCI client against Debian's real distribution registry: TLS, htpasswd, token auth."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from conveyor.clients.registry import RegistryClient, sha256_digest
from conveyor.errors import AuthenticationFailed, NotFound, TLSVerificationFailed
from conveyor.localstack.registry import RegistryServer, TokenAuth
from tests.registry_support import (
    ServedInThread,
    make_ca,
    need_registry,
    push_image,
    random_layer,
)

pytestmark = pytest.mark.registry
PASSWORD = "pa55-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, Path]]:
    need_registry()
    root = tmp_path_factory.mktemp("tls-registry")
    ca, cert, key = make_ca(root)
    server = RegistryServer(root / "r", htpasswd=("ci", SecretStr(PASSWORD)), tls=(cert, key))
    with server:
        yield server, ca


def test_htpasswd_over_tls_round_trip_and_chunked_upload(
    tls_registry: tuple[RegistryServer, Path],
) -> None:
    server, ca = tls_registry
    with RegistryClient(
        server.url, "ci", SecretStr(PASSWORD), ca_bundle=ca, chunk_size=4096
    ) as client:
        client.ping()
        layer = random_layer(10_000)
        digest = sha256_digest(layer)
        client.upload_blob("tls/app", layer, digest, len(layer), chunked=True)
        assert client.counters.requests["PATCH blob"] == 3
        assert client.blob_size("tls/app", digest) == len(layer)
        with client.open_blob("tls/app", digest) as response:
            assert b"".join(response.iter_raw()) == layer
        image = push_image(client, "tls/app", "1.0.0", [layer])
        assert client.resolve("tls/app", "1.0.0") == image
        assert client.get_manifest("tls/app", image).digest == image


def test_untrusted_ca_is_refused(tls_registry: tuple[RegistryServer, Path]) -> None:
    server, _ = tls_registry
    with (
        RegistryClient(server.url, "ci", SecretStr(PASSWORD)) as client,
        pytest.raises(TLSVerificationFailed),
    ):
        client.ping()


def test_wrong_password_is_terminal_and_never_leaks(
    tls_registry: tuple[RegistryServer, Path], caplog: pytest.LogCaptureFixture
) -> None:
    server, ca = tls_registry
    caplog.set_level(logging.DEBUG)
    wrong = SecretStr("wrong-" + PASSWORD)
    with RegistryClient(server.url, "ci", wrong, ca_bundle=ca) as client:
        with pytest.raises(AuthenticationFailed) as err:
            client.ping()
        texts = [repr(client), str(client), str(err.value), repr(client.auth), caplog.text]
    with RegistryClient(server.url, "ci", SecretStr(PASSWORD), ca_bundle=ca) as good:
        push_image(good, "tls/leak", "1", [random_layer(100)])
        texts += [repr(good), caplog.text]
    for text in texts:
        assert PASSWORD not in text
        assert base64.b64encode(f"ci:{PASSWORD}".encode()).decode() not in text


def test_a_new_client_asked_from_many_threads_at_once_authenticates_each(
    tls_registry: tuple[RegistryServer, Path],
) -> None:
    """Every first request meets the Basic challenge at the same time; the ones that
    went out before another thread learnt of it are sent again with the password, not
    taken for refused credentials (a release's members read side by side got 401)."""
    server, ca = tls_registry
    with RegistryClient(server.url, "ci", SecretStr(PASSWORD), ca_bundle=ca) as client:
        digest = push_image(client, "tls/threads", "1", [random_layer(100)])
    with (
        RegistryClient(server.url, "ci", SecretStr(PASSWORD), ca_bundle=ca) as fresh,
        ThreadPoolExecutor(8) as pool,
    ):
        found = list(pool.map(lambda _: fresh.get_manifest("tls/threads", digest), range(16)))
    assert {m.digest for m in found} == {digest}


def test_tag_listing_against_real_registry(tls_registry: tuple[RegistryServer, Path]) -> None:
    server, ca = tls_registry
    with RegistryClient(server.url, "ci", SecretStr(PASSWORD), ca_bundle=ca) as client:
        digest = push_image(client, "tls/paged", "t0", [random_layer(100)])
        manifest = client.get_manifest("tls/paged", digest)
        for i in range(1, 7):
            client.put_manifest("tls/paged", f"t{i}", manifest.data, manifest.media_type)
        # distribution 2.8 ignores ``n`` for tags: paging is covered by the protocol test.
        assert sorted(client.list_tags("tls/paged", page_size=2)) == [f"t{i}" for i in range(7)]
        with pytest.raises(NotFound):
            client.get_manifest("tls/paged", "nope")


# --- token auth ------------------------------------------------------------


class TokenServer(ServedInThread):
    """A minimal distribution token endpoint: Basic-authenticated GET, ES256 JWT with x5c."""

    def __init__(self, directory: Path, service: str, issuer: str) -> None:
        self.service, self.issuer = service, issuer
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conveyor token signer")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / "token-signer.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.scopes: list[str] = []
        super().__init__(self._handler())

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/token"

    def token(self, scope: str) -> str:
        access = []
        for item in scope.split():
            kind, name, actions = item.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = dt.datetime.now(dt.UTC)
        claims = {
            "iss": self.issuer,
            "sub": "ci",
            "aud": self.service,
            "exp": now + dt.timedelta(minutes=5),
            "nbf": now - dt.timedelta(seconds=30),
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        der = self.cert.public_bytes(serialization.Encoding.DER)
        headers = {"x5c": [base64.b64encode(der).decode()]}
        return jwt.encode(claims, self.key, algorithm="ES256", headers=headers)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                expected = "Basic " + base64.b64encode(f"ci:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                scope = " ".join(query.get("scope", []))
                server.scopes.append(scope)
                body = json.dumps({"token": server.token(scope), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def _scope_set(scope: str) -> set[tuple[str, frozenset[str]]]:
    return {(i.split(":")[1], frozenset(i.split(":")[2].split(","))) for i in scope.split()}


def test_bearer_token_auth_against_real_registry(tmp_path: Path) -> None:
    need_registry()
    with TokenServer(tmp_path, "conveyor-registry", "conveyor-token-issuer") as tokens:
        auth = TokenAuth(tokens.realm, tokens.service, tokens.issuer, tokens.bundle)
        with RegistryServer(tmp_path / "r", token_auth=auth) as server:
            with RegistryClient(server.url, "ci", SecretStr(PASSWORD)) as client:
                digest = push_image(client, "team/app", "2.0.0", [random_layer(2048)])
                assert client.mount_blob("team/other", sha256_digest(b"x"), "team/app") is False
                assert client.resolve("team/app", "2.0.0") == digest
            # distribution orders the actions at random: compare them as sets.
            asked = [_scope_set(s) for s in tokens.scopes]
            assert {("team/app", frozenset({"pull", "push"}))} in asked
            mount = {("team/other", frozenset({"pull", "push"})), ("team/app", frozenset({"pull"}))}
            assert mount in asked
            with (
                RegistryClient(server.url, "ci", SecretStr("bad")) as bad,
                pytest.raises(AuthenticationFailed),
            ):
                bad.resolve("team/app", "2.0.0")
