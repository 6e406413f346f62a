"""Promotion, immutable tags, evidence and gc against Debian's real distribution registry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.clients.registry import RegistryClient, referrers_tag
from conveyor.errors import EvidenceMissing, ImmutableTagViolation, NotFound
from conveyor.evidence import attach_evidence, read_evidence, require_evidence
from conveyor.gc import apply_gc, plan_gc
from conveyor.localstack.registry import RegistryServer
from conveyor.promotion import TagPolicy, promote
from tests.registry_support import AccessLog, need_registry, push_image, push_index, random_layer

pytestmark = pytest.mark.registry
POLICY = TagPolicy(frozenset({"integration-ready", "production-ready"}))
BLOB_LINE = re.compile(r'"(GET|PUT|PATCH|POST|HEAD) /v2/[^ ]+/blobs/')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    need_registry()
    with RegistryServer(tmp_path_factory.mktemp("registry")) as s:
        yield s


@pytest.fixture
def client(server: RegistryServer) -> Iterator[RegistryClient]:
    with RegistryClient(server.url) as c:
        yield c


def test_same_repo_promotion_moves_no_layer_bytes(
    server: RegistryServer, client: RegistryClient
) -> None:
    layer = random_layer(512 * 1024)
    digest = push_image(client, "shop/web", "1.0.0", [layer])
    access = AccessLog(server)
    access.mark()
    client.counters.reset()
    result = promote(client, "shop/web", digest, "integration-ready", policy=POLICY)
    lines = access.lines_since_mark(client)
    assert result.changed and result.digest == digest
    assert client.resolve("shop/web", "integration-ready") == digest
    assert [line for line in lines if BLOB_LINE.search(line)] == []
    assert any('"PUT /v2/shop/web/manifests/integration-ready' in line for line in lines)
    assert client.counters.blob_bytes_sent == client.counters.blob_bytes_received == 0
    assert client.counters.bytes_sent < 2048


def test_version_tags_are_immutable_and_moving_tags_move(client: RegistryClient) -> None:
    first = push_image(client, "shop/api", "1.0.0", [random_layer(1024)])
    second = push_image(client, "shop/api", None, [random_layer(1024)])
    with pytest.raises(ImmutableTagViolation, match=r"shop/api:1\.0\.0"):
        promote(client, "shop/api", second, "1.0.0", policy=POLICY)
    assert client.resolve("shop/api", "1.0.0") == first
    again = promote(client, "shop/api", first, "1.0.0", policy=POLICY)
    assert not again.changed
    promote(client, "shop/api", first, "production-ready", policy=POLICY)
    moved = promote(client, "shop/api", second, "production-ready", policy=POLICY)
    assert moved.changed and moved.previous == first
    assert client.resolve("shop/api", "production-ready") == second


def test_cross_repository_promotion_mounts_blobs(client: RegistryClient) -> None:
    digest = push_image(client, "stage/app", "3.1.0", [random_layer(256 * 1024)])
    client.counters.reset()
    result = promote(client, "stage/app", digest, "3.1.0", policy=POLICY, dst_repository="prod/app")
    assert (result.blobs_mounted, result.blobs_copied) == (2, 0)
    assert client.counters.blob_bytes_sent == client.counters.blob_bytes_received == 0
    assert client.get_manifest("prod/app", "3.1.0").digest == digest


def test_cross_registry_copy_streams_only_missing_blobs(
    tmp_path: Path, client: RegistryClient
) -> None:
    shared = random_layer(64 * 1024)
    child_a = push_image(client, "multi/app", None, [shared, random_layer(32 * 1024)])
    child_b = push_image(client, "multi/app", None, [shared])
    index = push_index(client, "multi/app", "4.0.0", [child_a, child_b])
    with RegistryServer(tmp_path / "other") as other, RegistryClient(other.url) as dst:
        push_image(dst, "multi/app", "seed", [shared])
        result = promote(client, "multi/app", index, "4.0.0", policy=POLICY, dst=dst)
        # The seed already holds the shared layer and the (identical) config.
        assert (result.blobs_copied, result.bytes_copied) == (1, 32 * 1024)
        assert dst.get_manifest("multi/app", "4.0.0").digest == index
        for child in (child_a, child_b):
            assert dst.get_manifest("multi/app", child).digest == child


def test_evidence_round_trip_and_requirement(client: RegistryClient) -> None:
    digest = push_image(client, "ev/app", "1.2.3", [random_layer(1024)])
    with pytest.raises(EvidenceMissing, match="no integration evidence"):
        require_evidence(client, "ev/app", digest, ["integration"], environment="integration")
    attach_evidence(client, "ev/app", digest, "scan", {"passed": True, "critical": 0})
    failing = {"environment": "integration", "passed": 3, "failed": 1}
    attach_evidence(client, "ev/app", digest, "integration", failing)
    with pytest.raises(EvidenceMissing, match="did not pass"):
        require_evidence(client, "ev/app", digest, ["integration"], environment="integration")
    passing = {"environment": "integration", "passed": 4, "failed": 0}
    art = attach_evidence(client, "ev/app", digest, "integration", passing)
    got = require_evidence(client, "ev/app", digest, ["scan", "integration"], "integration")
    assert [e.kind for e in got] == ["scan", "integration"] and got[1].digest == art
    with pytest.raises(EvidenceMissing, match="no integration evidence for production"):
        require_evidence(client, "ev/app", digest, ["integration"], environment="production")
    records = read_evidence(client, "ev/app", digest)
    assert [e.payload for e in records][1:] == [failing, passing]
    index = client.get_manifest("ev/app", referrers_tag(digest)).json
    assert len(index["manifests"]) == 3
    artifact = client.get_manifest("ev/app", art).json
    assert artifact["subject"]["digest"] == digest
    assert artifact["artifactType"] == "application/vnd.conveyor.evidence.integration.v1+json"
    assert artifact["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"


def test_evidence_about_another_image_is_ignored(client: RegistryClient) -> None:
    mine = push_image(client, "ev/forged", "1", [random_layer(512)])
    other = push_image(client, "ev/forged", "2", [random_layer(512)])
    attach_evidence(client, "ev/forged", other, "integration", {"passed": 1, "failed": 0})
    # Copy the other image's referrers index under my referrers tag.
    stolen = client.get_manifest("ev/forged", referrers_tag(other))
    client.put_manifest("ev/forged", referrers_tag(mine), stolen.data, stolen.media_type)
    assert read_evidence(client, "ev/forged", mine) == []
    with pytest.raises(EvidenceMissing):
        require_evidence(client, "ev/forged", mine)


def test_gc_keeps_newest_moving_and_protected(client: RegistryClient) -> None:
    repo = "gc/app"
    digests = [
        push_image(client, repo, f"1.0.{i}", [random_layer(256)], f"2024-01-0{i + 1}T00:00:00Z")
        for i in range(5)
    ]
    promote(client, repo, digests[4], "integration-ready", policy=POLICY)
    promote(client, repo, digests[1], "production-ready", policy=POLICY)
    attach_evidence(client, repo, digests[2], "scan", {"passed": True})
    plan = plan_gc(client, repo, keep=2, protected={digests[0]}, policy=POLICY)
    assert [i.digest for i in plan.delete] == [digests[2]]
    assert {i.digest for i in plan.keep} == {digests[0], digests[1], digests[3], digests[4]}
    assert any("protected" in line and digests[0][:19] in line for line in plan.lines())
    assert apply_gc(client, plan) == [digests[2]]
    with pytest.raises(NotFound):
        client.get_manifest(repo, digests[2])
    assert client.resolve(repo, referrers_tag(digests[2])) is None
    assert "1.0.2" not in client.list_tags(repo)
    for kept in (digests[0], digests[1], digests[3], digests[4]):
        assert client.get_manifest(repo, kept).digest == kept
