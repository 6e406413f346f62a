"""`conveyor gc` of a release of several services against a real registry: a member
image stays while any kept release lists it, whatever its age; a release an
environment runs or could roll back to keeps every member."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from typer.testing import CliRunner

from conveyor.cli.main import app as cli
from conveyor.clients.registry import RegistryClient, referrers_tag
from conveyor.errors import NotFound
from conveyor.evidence import attach_evidence
from conveyor.gc import apply_release_gc, plan_release_gc
from conveyor.localstack.registry import RegistryServer
from conveyor.promotion import TagPolicy
from conveyor.release import Release
from conveyor.release_set import (
    RecordedRelease,
    ReleaseSet,
    promote_set,
    read_release,
    record_release,
)
from tests.parts import free_port
from tests.registry_support import need_registry, push_image, random_layer

pytestmark = pytest.mark.registry
TAG = "production-ready"
POLICY = TagPolicy(frozenset({"integration-ready", TAG}))
SERVICES = ("worker", "api", "front")
REPOS = [f"conveyor/shop/{s}" for s in SERVICES]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryServer]:
    need_registry()
    with RegistryServer(tmp_path / "registry") as s:
        yield s


@pytest.fixture
def client(server: RegistryServer) -> Iterator[RegistryClient]:
    with RegistryClient(server.url) as c:
        yield c


def _release(client: RegistryClient, n: int, carried: dict[str, Release]) -> RecordedRelease:
    """Release ``n``: the services in ``carried`` keep their digest, the others are new."""
    members = []
    for name, repo in zip(SERVICES, REPOS, strict=True):
        if name in carried:
            members.append(carried[name])
            continue
        digest = push_image(client, repo, f"{n}", [random_layer(256)], f"2024-01-0{n}T00:00:00Z")
        members.append(
            Release(app=name, registry="r", repository=repo, digest=digest, version=f"{n}")
        )
    release = ReleaseSet(
        name="shop",
        registry="r",
        repository="conveyor/shop",
        version=f"{n}",
        members=tuple(members),
    )
    return record_release(client, release)


def _history(client: RegistryClient) -> list[RecordedRelease]:
    """1: all new; 2: worker carried; 3: worker and api carried."""
    r1 = _release(client, 1, {})
    r2 = _release(client, 2, {"worker": r1.release.member("worker")})
    return [r1, r2, _release(client, 3, {n: r2.release.member(n) for n in ("worker", "api")})]


def test_gc_keeps_every_member_a_kept_release_lists_and_deletes_the_rest(
    client: RegistryClient,
) -> None:
    r1, r2, r3 = _history(client)
    r4 = _release(client, 4, {})
    promote_set(client, r3, TAG, policy=POLICY)
    attach_evidence(client, "conveyor/shop", r2.digest, "scan", {"passed": True})
    # Production runs release 3 and could roll back to release 1; one newest kept.
    plan = plan_release_gc(
        client, "conveyor/shop", REPOS, keep=1, protected={r3.digest, r1.digest}, policy=POLICY
    )
    assert [i.digest for i in plan.artifacts.delete] == [r2.digest]
    old_front = r2.release.member("front").digest
    # The api of release 2 is older than the newest image but release 3 carries it.
    assert [(p.repository, [i.digest for i in p.delete]) for p in plan.members] == [
        ("conveyor/shop/worker", []),
        ("conveyor/shop/api", []),
        ("conveyor/shop/front", [old_front]),
    ]
    carried = next(i for i in plan.members[1].keep if i.digest == r3.release.member("api").digest)
    assert carried.reason == "listed by a release that is kept"

    assert sorted(apply_release_gc(client, plan)) == sorted([r2.digest, old_front])
    for repo in ("conveyor/shop/front", "conveyor/shop"):  # the image, and its mounted copy
        with pytest.raises(NotFound):
            client.get_manifest(repo, old_front)
    with pytest.raises(NotFound):
        client.get_manifest("conveyor/shop", r2.digest)
    assert client.resolve("conveyor/shop", referrers_tag(r2.digest)) is None
    assert "2" not in client.list_tags("conveyor/shop")
    for kept in (r1, r3, r4):
        listed = read_release(client, "conveyor/shop", kept.digest)
        for member in kept.release.members:
            assert listed[member.app] == member.digest
            assert client.get_manifest(member.repository, member.digest).digest == member.digest
            assert client.get_manifest("conveyor/shop", member.digest).digest == member.digest


def test_gc_keeps_what_an_instance_runs_and_refuses_an_unreadable_protected_release(
    client: RegistryClient,
) -> None:
    _, r2, r3 = _history(client)
    astray = r2.release.member("front").digest
    plan = plan_release_gc(
        client, "conveyor/shop", REPOS, keep=1, protected={r3.digest},
        running={"conveyor/shop/front": {astray}}, policy=POLICY,
    )  # fmt: skip
    front = plan.members[2]
    assert {i.digest: i.reason for i in front.keep}[astray] == "running (an instance runs it now)"
    assert astray not in {i.digest for i in front.delete}
    gone = "sha256:" + "0" * 64
    with pytest.raises(NotFound):
        plan_release_gc(client, "conveyor/shop", REPOS, keep=1, protected={gone}, policy=POLICY)


def _pipeline_file(tmp_path: Path, url: str) -> Path:
    for name in SERVICES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text("FROM scratch\n")
    doc = {
        "name": "shop",
        "services": [
            {"name": n, "context": n, "environments": {"gc": {"port": free_port()}}}
            for n in SERVICES
        ],
        "registry": {"url": url, "repository": "conveyor/shop", "keep_integration_ready": 1},
        "environments": [
            {"name": "gc", "tag": TAG, "driver": {"kind": "docker", "port": free_port()}}
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def test_the_cli_collects_every_member_repository(
    docker_client: docker.DockerClient,
    server: RegistryServer,
    client: RegistryClient,
    tmp_path: Path,
) -> None:
    """Nothing deployed (the docker driver finds no release), the newest release kept,
    and newer images of two members that never made a release: each member repository's
    newest image stays, and so does what release 3 carries from releases 1 and 2."""
    r1, r2, r3 = _history(client)
    for repo in REPOS[:2]:
        push_image(client, repo, "4", [random_layer(256)], "2024-01-04T00:00:00Z")
    args = ["gc", "-p", str(_pipeline_file(tmp_path, server.url))]
    dry = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert client.get_manifest("conveyor/shop", r1.digest).digest == r1.digest
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert "deleted 5 releases" in done.output
    for kept in r3.release.members:
        assert client.get_manifest(kept.repository, kept.digest).digest == kept.digest
    assert client.get_manifest("conveyor/shop", r3.digest).digest == r3.digest
    gone = [("conveyor/shop", r.digest) for r in (r1, r2)] + [
        (m.repository, m.digest)
        for m in (r1.release.member("api"), r1.release.member("front"), r2.release.member("front"))
    ]
    for repo, digest in gone:
        with pytest.raises(NotFound):
            client.get_manifest(repo, digest)
