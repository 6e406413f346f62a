"""Publishing a built image: its blobs and manifest by digest, then the version tag.

The version tag is immutable, so it is never written by a push: the manifest goes up
under its digest, and the tag is set afterwards through the same check as every
promotion (``TagPolicy``), by one writer per repository and tag at a time. Builds are
reproducible (``clients.reproducible``), so concurrent runs of one commit publish the
same image and every run after the first finds it published.

A layer published before, to any repository of the registry, is not compressed
again: ``layer_cache`` names its blob, which is found in the repository or mounted
from where it went, as a docker push does.

"The same image" is judged by the image config's digest (the image id), not by the
manifest's: the manifest also records how layers were compressed, which differs
between an engine's ``docker push`` and ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from conveyor.clients.registry import RegistryClient, sha256_digest
from conveyor.errors import (
    AuthenticationFailed,
    ImmutableTagViolation,
    NotFound,
    PermissionDenied,
    PushFailed,
    TransientError,
)
from conveyor.layer_cache import Blob, LayerCache
from conveyor.promotion import TagPolicy

log = logging.getLogger(__name__)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_SPOOL_BYTES = 64 * 1024 * 1024
# Long enough for one push of a large image over a slow link.
_LOCK_WAIT_S = 1800.0


@dataclass(frozen=True)
class Published:
    digest: str
    tag: str
    # The tag named this image before: an earlier or concurrent run published it.
    already: bool


@dataclass(frozen=True)
class _Image:
    config: bytes
    layers: list[Blob]

    @property
    def id(self) -> str:
        return sha256_digest(self.config)

    def manifest(self) -> bytes:
        body = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(self.config), "digest": self.id},
            "layers": [
                {"mediaType": DOCKER_LAYER, "size": x.size, "digest": x.digest} for x in self.layers
            ],
        }
        return json.dumps(body, indent=3).encode()


@contextlib.contextmanager
def _gzip(src: IO[bytes]) -> Iterator[tuple[IO[bytes], str, int]]:
    """Compressed with no name and no time in the header, so the bytes depend on the
    layer only; at gzip's fastest level, as go-containerregistry (crane, ko) compresses:
    a layer is compressed once per build (``layer_cache``) and level 9 took 5x the CPU
    for 6% fewer bytes of busybox."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as out:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=1) as gz:
            shutil.copyfileobj(src, gz, 1024 * 1024)
        size = out.tell()
        out.seek(0)
        h = hashlib.sha256()
        while chunk := out.read(1024 * 1024):
            h.update(chunk)
        out.seek(0)
        yield out, "sha256:" + h.hexdigest(), size


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    found = archive.extractfile(name)
    if found is None:
        raise PushFailed(f"image archive: {name} is not a file")
    return found


def _head(archive: tarfile.TarFile) -> tuple[bytes, list[str]]:
    """The image config of a ``docker save`` archive and its layers' member names."""
    entry = json.load(_member(archive, "manifest.json"))[0]
    return _member(archive, entry["Config"]).read(), list(entry["Layers"])


def _config(saved: IO[bytes]) -> bytes:
    with tarfile.open(fileobj=saved, mode="r:") as archive:
        config, _ = _head(archive)
    saved.seek(0)
    return config


@contextlib.contextmanager
def tag_lock(lock_dir: Path, registry: str, repository: str, tag: str) -> Iterator[None]:
    """One writer of ``registry/repository:tag`` at a time on this machine (flock)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(f"{registry}/{repository}:{tag}".encode()).hexdigest()[:32]
    deadline = time.monotonic() + _LOCK_WAIT_S
    with (lock_dir / f"{name}.lock").open("a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TransientError(
                        f"{repository}:{tag}: another push held the tag for {_LOCK_WAIT_S:.0f}s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / "conveyor-locks"


def _existing(
    registry: RegistryClient, repository: str, tag: str, image_id: str, policy: TagPolicy
) -> str | None:
    """The digest under ``tag`` when it is this image; raises when a version tag names another."""
    current = registry.resolve(repository, tag)
    if current is None:
        return None
    config: dict[str, Any] = registry.get_manifest(repository, current).json.get("config") or {}
    if config.get("digest") == image_id:
        return current
    if policy.is_moving(tag):
        return None
    raise ImmutableTagViolation(
        f"{repository}:{tag} already names {current}, another image; version tags are "
        "immutable: commit your change or pass another version"
    )


def publish(
    registry: RegistryClient,
    repository: str,
    saved: IO[bytes],
    tag: str,
    *,
    policy: TagPolicy,
    lock_dir: Path | None = None,
    layers: LayerCache | None = None,
) -> Published:
    """Publish the image of a ``docker save`` archive and set ``tag`` to it; ``layers``
    names the blobs published for its layers before (``layer_cache``)."""
    image_id = sha256_digest(_config(saved))
    found = _existing(registry, repository, tag, image_id, policy)
    if found is not None:
        return Published(found, tag, already=True)
    # The whole upload is inside the lock: concurrent uploads of the same blobs make
    # distribution's filesystem store answer 500 ("invalid checksum digest format")
    # while one writer's link file is half written, and the runs that wait find the
    # image published instead of uploading it again.
    with tag_lock(lock_dir or default_lock_dir(), registry.address, repository, tag):
        found = _existing(registry, repository, tag, image_id, policy)
        if found is not None:
            return Published(found, tag, already=True)
        digest, manifest = _upload(registry, repository, saved, layers or LayerCache())
        registry.put_manifest(repository, tag, manifest, DOCKER_MANIFEST)
    # The lock covers this machine only: a writer on another machine shows up here, and
    # is fine only when it published this same image.
    after = _existing(registry, repository, tag, image_id, policy)
    if after != digest:
        return Published(str(after), tag, already=True)
    log.info("published %s@%s as %s", repository, digest, tag)
    return Published(digest, tag, already=False)


def _upload(
    registry: RegistryClient, repository: str, saved: IO[bytes], layers: LayerCache
) -> tuple[str, bytes]:
    """Blobs the registry lacks, then the manifest under its digest; its digest and bytes."""
    with tarfile.open(fileobj=saved, mode="r:") as archive:
        config, names = _head(archive)
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        blobs = [
            _layer(registry, repository, archive, name, diff_id, layers)
            for name, diff_id in zip(names, diff_ids, strict=True)
        ]
    saved.seek(0)
    image = _Image(config, blobs)
    registry.push_blob(repository, image.config)
    manifest = image.manifest()
    digest = sha256_digest(manifest)
    return registry.put_manifest(repository, digest, manifest, DOCKER_MANIFEST), manifest


def _layer(
    registry: RegistryClient,
    repository: str,
    archive: tarfile.TarFile,
    name: str,
    diff_id: str,
    layers: LayerCache,
) -> Blob:
    """One layer's blob in ``repository``: the one published for it before when the
    registry has it here or mounts it from where it went, else compressed and uploaded."""
    known = layers.get(registry.address, diff_id)
    if known is not None and _present(registry, repository, known):
        return known
    with _gzip(_member(archive, name)) as (file, digest, size):
        if not registry.blob_exists(repository, digest):
            registry.upload_blob(repository, file, digest, size)
    blob = Blob(digest, size, repository)
    layers.put(registry.address, diff_id, blob)
    return blob


def _present(registry: RegistryClient, repository: str, blob: Blob) -> bool:
    """Whether ``repository`` has ``blob`` now, mounted from where it went if need be.
    A mount the credentials may not make (no pull on that repository) is no failure:
    the layer is then compressed and uploaded as if never seen."""
    if registry.blob_exists(repository, blob.digest):
        return True
    if blob.repository == repository:
        return False
    try:
        return registry.mount_blob(repository, blob.digest, blob.repository)
    except (PermissionDenied, AuthenticationFailed, NotFound):
        return False
