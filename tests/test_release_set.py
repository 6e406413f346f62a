"""A release of three services on a real registry: its ID is its content, its artifact is
an index listing the members' digests by service, and promotion moves an environment's
tag on every member or, when the registry refuses one, on none."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from conveyor.clients.registry import RegistryClient
from conveyor.errors import PushFailed
from conveyor.gc import plan_gc
from conveyor.localstack.registry import RegistryServer
from conveyor.promotion import TagPolicy
from conveyor.release import Release
from conveyor.release_set import (
    ReleaseSet,
    kept_members,
    member_url_environment,
    promote_set,
    read_release,
    record_release,
)
from conveyor.services_release import member_changes
from tests.fault_proxy import Fault, FaultProxy
from tests.registry_support import need_registry, push_image, random_layer

SERVICES = ("worker", "api", "front")
TAG = "production-ready"
POLICY = TagPolicy(frozenset({"integration-ready", TAG}))


def _release(client: RegistryClient, version: str) -> ReleaseSet:
    members = []
    for name in SERVICES:
        repo = f"conveyor/shop/{name}"
        digest = push_image(client, repo, version, [random_layer(1024)])
        members.append(
            Release(app=name, registry="r", repository=repo, digest=digest, version=version)
        )
    return ReleaseSet(
        name="shop",
        registry="r",
        repository="conveyor/shop",
        version=version,
        members=tuple(members),
    )


def _tags(client: RegistryClient, release: ReleaseSet) -> dict[str, str | None]:
    repos = [m.repository for m in release.members] + [release.repository]
    return {repo: client.resolve(repo, TAG) for repo in repos}


def test_the_release_id_is_its_content_and_its_artifact_lists_every_member(
    tmp_path: Path,
) -> None:
    need_registry()
    with RegistryServer(tmp_path / "registry") as server, RegistryClient(server.url) as client:
        release = _release(client, "1.0.0")
        reordered = release.model_copy(update={"members": release.members[::-1], "version": "x"})
        assert reordered.id == release.id
        recorded = record_release(client, release)
        assert recorded.digest == record_release(client, release).digest
        assert client.resolve("conveyor/shop", "1.0.0") == recorded.digest
        assert read_release(client, "conveyor/shop", "1.0.0") == {
            m.app: m.digest for m in release.members
        }


def test_a_member_the_registry_refuses_leaves_no_tag_moved(tmp_path: Path) -> None:
    need_registry()
    with (
        RegistryServer(tmp_path / "registry") as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
        RegistryClient(proxy.url) as client,
    ):
        old = record_release(client, _release(client, "1.0.0"))
        promote_set(client, old, TAG, policy=POLICY)
        before = _tags(client, old.release)
        assert set(before.values()) >= {m.digest for m in old.release.members}

        new = record_release(client, _release(client, "1.1.0"))
        # The second member's tag cannot be written.
        mark = len(proxy.seen)
        proxy.add(Fault("PUT", f"/v2/conveyor/shop/api/manifests/{TAG}$", status=403))
        with pytest.raises(PushFailed, match="every tag was put back"):
            promote_set(client, new, TAG, policy=POLICY)
        assert _tags(client, new.release) == before
        puts = Counter(
            path for method, path, _ in proxy.seen[mark:] if method == "PUT" and TAG in path
        )
        # The members are tagged side by side: the others moved and were put back, api
        # was refused, and the release artifact, tagged only after every member, never.
        assert puts == {
            f"/v2/conveyor/shop/worker/manifests/{TAG}": 2,
            f"/v2/conveyor/shop/api/manifests/{TAG}": 1,
            f"/v2/conveyor/shop/front/manifests/{TAG}": 2,
        }

        proxy.faults.clear()
        mark = len(proxy.seen)
        promote_set(client, new, TAG, policy=POLICY)
        assert read_release(client, "conveyor/shop", TAG) == {
            m.app: m.digest for m in new.release.members
        }
        # Each member: its tag read (HEAD), its manifest by digest (GET), its tag written
        # (PUT); the manifest the tag named before is read only for a restore.
        calls = Counter(
            (method, path.partition("/manifests/")[0]) for method, path, _ in proxy.seen[mark:]
        )
        for name in SERVICES:
            for method in ("HEAD", "GET", "PUT"):
                assert calls[method, f"/v2/conveyor/shop/{name}"] == 1, (method, name, calls)


def test_gc_keeps_every_member_of_what_runs_and_what_it_could_roll_back_to(
    tmp_path: Path,
) -> None:
    need_registry()
    with RegistryServer(tmp_path / "registry") as server, RegistryClient(server.url) as client:
        releases = [record_release(client, _release(client, v)) for v in ("1", "2", "3")]
        promote_set(client, releases[2], TAG, policy=POLICY)
        # Production runs release 3 and could roll back to release 2; release 1 may go.
        keep = kept_members(client, "conveyor/shop", [TAG, "2"])
        for name in SERVICES:
            repo = f"conveyor/shop/{name}"
            plan = plan_gc(client, repo, keep=0, protected=keep[repo], policy=POLICY)
            kept = {i.digest for i in plan.keep}
            assert kept == {r.release.member(name).digest for r in releases[1:]}
            assert {i.digest for i in plan.delete} == {releases[0].release.member(name).digest}


def test_checks_get_every_members_url() -> None:
    urls = {"front": "http://127.0.0.1:1", "order-api": "http://127.0.0.1:2"}
    assert member_url_environment(urls) == {
        "CONVEYOR_URL_FRONT": "http://127.0.0.1:1",
        "CONVEYOR_URL_ORDER_API": "http://127.0.0.1:2",
    }


def test_the_approval_request_names_each_members_version_change() -> None:
    def member(name: str, version: str, fill: str) -> Release:
        return Release(
            app=name, registry="r", repository=f"s/{name}", digest="sha256:" + fill * 64,
            version=version,
        )  # fmt: skip

    def release(*members: Release) -> Release:
        return Release(
            app="shop", registry="r", repository="s", digest="sha256:" + "f" * 64,
            version="2", members=members,
        )  # fmt: skip

    running = release(member("worker", "1", "a"), member("api", "1", "b"))
    new = release(member("worker", "1", "a"), member("api", "2", "c"), member("front", "2", "d"))
    assert member_changes(new, running) == [
        f"worker: unchanged at 1 ({'a' * 12})",
        f"api: 1 ({'b' * 12}) -> 2 ({'c' * 12})",
        f"front: new at 2 ({'d' * 12})",
    ]
