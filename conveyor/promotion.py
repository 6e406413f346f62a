"""Promotion is a manifest copy: the digest stays, only a tag moves.

Within a repository the manifest's exact bytes are PUT under the new tag, so no layer
moves. Across repositories or registries only the blobs the target lacks are mounted
or streamed, then the manifest follows. Version tags are immutable: once set, a tag
never points at another digest; only the pipeline's moving tags follow releases.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.clients.registry import Manifest, RegistryClient
from conveyor.config.registry import RegistryConfig
from conveyor.errors import ImmutableTagViolation, PushFailed
from conveyor.release import DIGEST_RE, Release

if TYPE_CHECKING:
    from conveyor.config import EnvironmentConfig
    from conveyor.connections import Connections

log = logging.getLogger(__name__)


class ManifestLocker(Protocol):
    """Makes a manifest read-only at the registry (ACR's can_write/can_delete=False)."""

    def lock(self, repository: str, digest: str) -> None: ...


@dataclass(frozen=True)
class TagPolicy:
    """Which tags may move; every other tag is a version tag and immutable."""

    moving_tags: frozenset[str] = frozenset({"integration-ready", "production-ready"})

    @classmethod
    def from_config(cls, config: RegistryConfig) -> TagPolicy:
        return cls(frozenset(config.moving_tags))

    def is_moving(self, tag: str) -> bool:
        return tag in self.moving_tags

    def check(self, client: RegistryClient, repository: str, tag: str, digest: str) -> str | None:
        """The digest ``tag`` points at now; raises if setting it would rewrite a version tag."""
        current = client.resolve(repository, tag)
        if current is not None and current != digest and not self.is_moving(tag):
            raise ImmutableTagViolation(
                f"{repository}:{tag} already names {current}; version tags are immutable, "
                f"refusing to point it at {digest} (publish a new version instead)"
            )
        return current


@dataclass
class PromotionResult:
    repository: str
    tag: str
    digest: str
    previous: str | None
    changed: bool
    blobs_mounted: int = 0
    blobs_copied: int = 0
    bytes_copied: int = 0
    locked: bool = False


def _blob_descriptors(manifest: Manifest) -> list[dict[str, Any]]:
    body = manifest.json
    blobs = [body["config"]] if "config" in body else []
    return blobs + list(body.get("layers") or [])


class _Copier:
    """Copies a manifest's content into another repository, blob by missing blob."""

    def __init__(
        self, src: RegistryClient, src_repo: str, dst: RegistryClient, dst_repo: str
    ) -> None:
        self.src, self.src_repo, self.dst, self.dst_repo = src, src_repo, dst, dst_repo
        self.same_registry = src is dst or src.url == dst.url
        self.mounted = self.copied = self.bytes = 0

    def blobs(self, descriptors: Iterable[dict[str, Any]]) -> None:
        for d in descriptors:
            digest, size = d["digest"], int(d["size"])
            if self.dst.blob_exists(self.dst_repo, digest):
                continue
            if self.same_registry and self.dst.mount_blob(self.dst_repo, digest, self.src_repo):
                self.mounted += 1
                continue
            with self.src.open_blob(self.src_repo, digest) as response:
                self.dst.upload_blob(self.dst_repo, response.iter_raw(), digest, size)
            self.copied += 1
            self.bytes += size

    def manifest(self, manifest: Manifest) -> None:
        """Everything ``manifest`` references, children of an index first."""
        if manifest.is_index:
            for child in manifest.json.get("manifests") or []:
                if self.dst.resolve(self.dst_repo, child["digest"]) is not None:
                    continue
                sub = self.src.get_manifest(self.src_repo, child["digest"])
                self.manifest(sub)
                self.dst.put_manifest(self.dst_repo, sub.digest, sub.data, sub.media_type)
        else:
            self.blobs(_blob_descriptors(manifest))


def promote(
    src: RegistryClient,
    repository: str,
    digest: str,
    tag: str,
    *,
    policy: TagPolicy,
    dst: RegistryClient | None = None,
    dst_repository: str | None = None,
    locker: ManifestLocker | None = None,
) -> PromotionResult:
    """Point ``tag`` at ``digest``, copying the image first when the target differs.

    Idempotent: a tag already at ``digest`` is left alone. Raises ImmutableTagViolation
    for a version tag at another digest, PushFailed if the tag does not end up at ``digest``.
    """
    if not DIGEST_RE.match(digest):
        raise PushFailed(f"promote needs a sha256 digest, got {digest!r}")
    dst = dst or src
    dst_repo = dst_repository or repository
    previous = policy.check(dst, dst_repo, tag, digest)
    result = PromotionResult(dst_repo, tag, digest, previous, changed=previous != digest)
    if result.changed:
        manifest = src.get_manifest(repository, digest)
        if dst is not src or dst_repo != repository:
            copier = _Copier(src, repository, dst, dst_repo)
            copier.manifest(manifest)
            result.blobs_mounted, result.blobs_copied = copier.mounted, copier.copied
            result.bytes_copied = copier.bytes
        # put_manifest checks the registry's digest against a sha256 of the exact bytes.
        dst.put_manifest(dst_repo, tag, manifest.data, manifest.media_type)
        log.info("promoted %s:%s -> %s (was %s)", dst_repo, tag, digest, previous)
    if locker is not None:
        locker.lock(dst_repo, digest)
        result.locked = True
    return result


def promote_release(
    connections: Connections, release: Release, env: EnvironmentConfig
) -> list[PromotionResult]:
    """The release's version tag and ``env``'s tag on its digest; the version tag is
    checked too, so a rerun can never point it elsewhere. Environments after the first
    lock the manifest where the registry can (ACR)."""
    pipeline = connections.pipeline
    policy = TagPolicy.from_config(pipeline.registry)
    locker = connections.manifest_locker() if env is not pipeline.environments[0] else None
    registry = connections.registry()
    return [
        promote(registry, release.repository, release.digest, tag, policy=policy, locker=locker)
        for tag in (release.version, env.tag)
    ]
