"""Helpers of the registry tests: a real registry, images built in the test, a CA."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conveyor.clients.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient, sha256_digest
from conveyor.localstack.registry import RegistryServer
from tests.parts import require_binary

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


class ServedInThread:
    """A fake HTTP service on 127.0.0.1: ``httpd``, served from a daemon thread while in ``with``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def need_registry() -> None:
    require_binary("docker-registry", "apt-get install docker-registry")


def push_image(
    client: RegistryClient,
    repo: str,
    tag: str | None,
    layers: list[bytes],
    created: str = "2024-01-01T00:00:00Z",
) -> str:
    """Upload blobs and an OCI image manifest built here; returns the manifest digest."""
    config = json.dumps({"created": created, "architecture": "amd64", "os": "linux"}).encode()
    cfg = client.push_blob(repo, config)
    descs = []
    for layer in layers:
        digest = sha256_digest(layer)
        if not client.blob_exists(repo, digest):
            client.upload_blob(repo, layer, digest, len(layer))
        descs.append({"mediaType": LAYER_TYPE, "digest": digest, "size": len(layer)})
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, **cfg},
        "layers": descs,
    }
    data = json.dumps(manifest).encode()
    return client.put_manifest(repo, tag or sha256_digest(data), data, OCI_MANIFEST)


def push_index(client: RegistryClient, repo: str, tag: str, children: list[str]) -> str:
    entries = []
    for digest in children:
        d = client.head_manifest(repo, digest)
        entries.append({**d, "platform": {"architecture": "amd64", "os": "linux"}})
    data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    return client.put_manifest(repo, tag, data, OCI_INDEX)


def random_layer(size: int = 64 * 1024) -> bytes:
    return os.urandom(size)


class AccessLog:
    """The registry's own access log: what reached the server, counted there."""

    def __init__(self, server: RegistryServer) -> None:
        self.server = server
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.server.log_path.stat().st_size

    def lines_since_mark(self, client: RegistryClient) -> list[str]:
        """Access-log lines since ``mark``, after a sentinel request proves they are flushed."""
        sentinel = f"/v2/sentinel-{time.monotonic_ns()}/tags/list"
        try:
            client._request("GET", sentinel, ok=(200, 401, 404))
        finally:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                text = self.server.log_path.read_text(errors="replace")[self.offset :]
                if sentinel in text:
                    break
                time.sleep(0.05)
        return [
            line
            for line in text.splitlines()
            if '"' in line and " HTTP/1.1" in line and "sentinel-" not in line
        ]


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (IP SAN): (ca, cert, key) PEM files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conveyor test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths
