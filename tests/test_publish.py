"""Publishing by digest against a real registry: eight concurrent publications of one
commit's image end with one digest under the version tag, the later ones find it
published, and a version tag never moves to another image."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import docker
import pytest
from pydantic import SecretStr

from conveyor.clients.docker_engine import DockerEngine
from conveyor.clients.registry import RegistryClient
from conveyor.errors import ImmutableTagViolation
from conveyor.layer_cache import Blob, LayerCache
from conveyor.localstack.registry import RegistryServer
from conveyor.promotion import TagPolicy
from conveyor.publish import DOCKER_MANIFEST, Published, publish
from tests.fault_proxy import FaultProxy
from tests.images import discard
from tests.parts import missing, require_binary
from tests.test_build_reproducible import _source

pytestmark = pytest.mark.docker

USER = "pusher"
POLICY = TagPolicy(frozenset({"integration-ready", "production-ready"}))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, str]]:
    require_binary("docker-registry", "apt-get install docker-registry")
    require_binary("htpasswd", "apt-get install apache2-utils")
    password = f"pw-{secrets.token_urlsafe(12)}"
    root = tmp_path_factory.mktemp("registry")
    with RegistryServer(root, htpasswd=(USER, SecretStr(password))) as server:
        yield server, password


@pytest.fixture
def engine(docker_client: docker.DockerClient) -> DockerEngine:
    return DockerEngine(docker_client, build_timeout_s=300)


def _client(server: RegistryServer, password: str) -> RegistryClient:
    return RegistryClient(server.url, USER, SecretStr(password))


def test_eight_concurrent_publications_of_one_commit_end_with_one_digest(
    engine: DockerEngine,
    docker_client: docker.DockerClient,
    registry: tuple[RegistryServer, str],
    tmp_path: Path,
) -> None:
    if not Path("/usr/bin/busybox").is_file():
        missing("busybox-static", "apt-get install busybox-static")
    server, password = registry
    source = _source(tmp_path)
    repository = f"conveyor/ship-{secrets.token_hex(3)}"
    tags = [f"{server.address}/{repository}:run-{i}" for i in range(8)]
    start = threading.Barrier(8)
    under_tag = None

    def build(i: int) -> str:
        return engine.build(source, Path("Dockerfile"), tags[i], {"VERSION": "1.0"}).id

    def ship(image: str) -> Published:
        start.wait(60)
        with engine.save(image) as saved, _client(server, password) as client:
            return publish(
                client, repository, saved, "1.0", policy=POLICY, lock_dir=tmp_path / "locks"
            )

    try:
        # Built first, so that a failed build raises its own error, not a broken barrier;
        # then the eight publications start together.
        with ThreadPoolExecutor(8) as pool:
            images = list(pool.map(build, range(8)))
            results = list(pool.map(ship, images))
        with _client(server, password) as client:
            under_tag = client.resolve(repository, "1.0")
            manifest = client.get_manifest(repository, "1.0")
        assert {r.digest for r in results} == {under_tag}
        assert sorted(r.already for r in results) == [False] + [True] * 7
        assert manifest.media_type == DOCKER_MANIFEST
        # What was published is a pullable image, the one that was built.
        pulled = docker_client.images.pull(
            f"{server.address}/{repository}@{under_tag}",
            auth_config={"username": USER, "password": password},
        )
        assert pulled.id == docker_client.images.get(tags[0]).id
    finally:
        discard(*tags)
        if under_tag:
            discard(f"{server.address}/{repository}@{under_tag}")


def test_a_version_tag_is_never_moved_to_another_image(
    engine: DockerEngine, registry: tuple[RegistryServer, str], tmp_path: Path
) -> None:
    server, password = registry
    repository = f"conveyor/other-{secrets.token_hex(3)}"
    images = []
    for page in ("one", "two"):
        context = tmp_path / page
        context.mkdir()
        (context / "page").write_text(page)
        (context / "Dockerfile").write_text("FROM scratch\nCOPY page /page\n")
        images.append(engine.build(context, Path("Dockerfile"), f"conveyor-test/other:{page}"))
    try:
        with _client(server, password) as client:
            with engine.save(images[0].id) as saved:
                first = publish(
                    client, repository, saved, "2.0", policy=POLICY, lock_dir=tmp_path / "locks"
                )
            with engine.save(images[1].id) as saved, pytest.raises(ImmutableTagViolation):
                publish(
                    client, repository, saved, "2.0", policy=POLICY, lock_dir=tmp_path / "locks"
                )
            assert client.resolve(repository, "2.0") == first.digest
            # A moving tag follows the newest image.
            with engine.save(images[1].id) as saved:
                moved = publish(
                    client,
                    repository,
                    saved,
                    "integration-ready",
                    policy=POLICY,
                    lock_dir=tmp_path / "locks",
                )
            assert moved.digest != first.digest and not moved.already
    finally:
        discard("conveyor-test/other:one", "conveyor-test/other:two")


def test_a_layer_published_before_is_mounted_and_a_wrong_record_costs_only_a_request(
    engine: DockerEngine,
    docker_client: docker.DockerClient,
    registry: tuple[RegistryServer, str],
    tmp_path: Path,
) -> None:
    server, password = registry
    tag = f"conveyor-test/layers:{secrets.token_hex(4)}"
    discard(tag)
    image = engine.build(_source(tmp_path), Path("Dockerfile"), tag, {"VERSION": "1.0"}).id
    cache = LayerCache(tmp_path / "layers")
    first, second, third = (f"conveyor/layers-{secrets.token_hex(3)}-{i}" for i in range(3))

    def ship(client: RegistryClient, repository: str) -> list[str]:
        with engine.save(image) as saved:
            publish(
                client, repository, saved, "1.0", policy=POLICY, lock_dir=tmp_path, layers=cache
            )
        return [x["digest"] for x in client.get_manifest(repository, "1.0").json["layers"]]

    with (
        FaultProxy(("127.0.0.1", server.port)) as proxy,
        RegistryClient(proxy.url, USER, SecretStr(password)) as client,
    ):
        layers = ship(client, first)
        mark = len(proxy.seen)
        assert ship(client, second) == layers
        seen = proxy.seen[mark:]
        # Every layer mounted from the first repository; only the config is uploaded.
        mounts = [p for m, p, _ in seen if m == "POST" and f"from={first}" in unquote(p)]
        assert len(mounts) == len(layers) >= 3
        uploaded = [p for m, p, _ in seen if m in ("PATCH", "PUT") and "/blobs/uploads/" in p]
        assert len(uploaded) == 1 and not [p for p in uploaded for d in layers if d in p]

        # A record that names a blob the registry does not have is passed over.
        diff_ids = docker_client.api.inspect_image(image)["RootFS"]["Layers"]
        for diff_id in diff_ids:
            cache.put(client.address, diff_id, Blob("sha256:" + "0" * 64, 1, "conveyor/gone"))
        assert ship(client, third) == layers
        # ... and corrected by the upload.
        fixed = cache.get(client.address, diff_ids[-1])
        assert fixed is not None and (fixed.digest, fixed.repository) == (layers[-1], third)
