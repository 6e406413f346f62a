"""Protocol paths Debian's distribution 2.8 does not exercise: tag paging and the
referrers API (an OCI 1.1 registry), checked against the spec's shapes via MockTransport."""

from __future__ import annotations

import json

import httpx
import pytest

from conveyor.clients.registry import OCI_INDEX, RegistryClient, sha256_digest
from conveyor.errors import ServerError
from conveyor.evidence import attach_evidence, read_evidence

SUBJECT = "sha256:" + "cd" * 32


def test_tag_listing_follows_link_headers() -> None:
    tags = [f"v{i}" for i in range(5)]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.params))
        last = request.url.params.get("last")
        start = tags.index(last) + 1 if last else 0
        page = tags[start : start + 2]
        headers = {}
        if start + 2 < len(tags):
            headers["Link"] = f'</v2/app/tags/list?n=2&last={page[-1]}>; rel="next"'
        return httpx.Response(200, json={"name": "app", "tags": page}, headers=headers)

    with RegistryClient("http://127.0.0.1:1", transport=httpx.MockTransport(handler)) as client:
        assert client.list_tags("app", page_size=2) == tags
    assert seen == ["n=2", "n=2&last=v1", "n=2&last=v3"]


def test_evidence_uses_the_referrers_api_when_the_registry_has_it() -> None:
    manifests: dict[str, bytes] = {}
    blobs: dict[str, bytes] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path.endswith(f"/manifests/{SUBJECT}"):
            headers = {"Docker-Content-Digest": SUBJECT, "Content-Type": OCI_INDEX}
            return httpx.Response(200, headers={**headers, "Content-Length": "100"})
        if "/blobs/uploads/" in path and method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/app/blobs/uploads/u1?s=1"})
        if "/blobs/uploads/" in path and method == "PUT":
            digest = request.url.params["digest"]
            blobs[digest] = request.read()
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if "/blobs/" in path:
            digest = path.rsplit("/", 1)[1]
            return (
                httpx.Response(200, content=blobs[digest])
                if digest in blobs
                else (httpx.Response(404))
            )
        if "/manifests/" in path and method == "PUT":
            data = request.read()
            manifests[sha256_digest(data)] = data
            return httpx.Response(
                201, headers={"Docker-Content-Digest": sha256_digest(data), "OCI-Subject": SUBJECT}
            )
        if "/manifests/" in path:
            data = manifests[path.rsplit("/", 1)[1]]
            return httpx.Response(200, content=data, headers={"Content-Type": "x"})
        if path == f"/v2/app/referrers/{SUBJECT}":
            found = []
            for digest, data in manifests.items():
                body = json.loads(data)
                found.append(
                    {
                        "mediaType": body["mediaType"],
                        "digest": digest,
                        "size": len(data),
                        "artifactType": body["artifactType"],
                        "annotations": body["annotations"],
                    }
                )
            return httpx.Response(200, json={"schemaVersion": 2, "manifests": found})
        return httpx.Response(500)

    with RegistryClient("http://127.0.0.1:1", transport=httpx.MockTransport(handler)) as client:
        art = attach_evidence(client, "app", SUBJECT, "scan", {"passed": True})
        [record] = read_evidence(client, "app", SUBJECT)
    assert record.digest == art and record.passed
    # The registry indexed the subject itself: no fallback tag was written.
    assert list(manifests) == [art]


def test_server_errors_are_transient() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(503, json={"errors": []}))
    with (
        RegistryClient("http://127.0.0.1:1", transport=transport) as client,
        pytest.raises(ServerError) as err,
    ):
        client.resolve("app", "1.0")
    assert err.value.transient
