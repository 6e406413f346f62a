"""A release of several services: one immutable set of digests, moved as one.

Its ID is derived from its content alone (sha256 over the sorted ``service=digest``
lines), as Kargo derives a Freight's ID, so the same images are the same release
whoever assembles them. It is recorded in the registry as an OCI image index in the
pipeline's own repository whose entries are the members' manifests, each annotated
``org.opencontainers.image.ref.name = service``; evidence attaches to the index's
digest as to any image's. The registry only accepts an index whose children it holds
in the same repository, so each member's manifest is mounted there first (blobs by
cross-repository mount, no layer bytes move).

Promotion moves an environment's tag on every member and then on the index, all or
nothing: it reads every previous tag value before writing, and on a failure it puts
each tag it already moved back on the manifest it named before (the bytes read
up front), so no environment is left half-tagged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from conveyor.clients.registry import OCI_INDEX, Manifest, RegistryClient
from conveyor.errors import ConveyorError, PushFailed
from conveyor.promotion import TagPolicy, _blob_descriptors, _Copier
from conveyor.release import Release

log = logging.getLogger(__name__)

RELEASE_ARTIFACT_TYPE = "application/vnd.conveyor.release.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
# Members mounted at once when a release is recorded: round trips, not CPU, so beyond
# the cores; few enough for a registry's connection limits.
MOUNTS = 8


class ReleaseSet(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    registry: str
    repository: str  # where the release artifact (the index) lives
    version: str
    revision: str | None = None
    members: tuple[Release, ...]

    @property
    def id(self) -> str:
        lines = sorted(f"{m.app}={m.digest}" for m in self.members)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def member(self, service: str) -> Release:
        for m in self.members:
            if m.app == service:
                return m
        raise KeyError(service)


@dataclass(frozen=True)
class RecordedRelease:
    release: ReleaseSet
    digest: str  # the index's digest: the release artifact


def index_document(release: ReleaseSet, manifests: dict[str, Manifest]) -> bytes:
    """The release's index; byte-stable for the same content (sorted, compact)."""
    entries = []
    for m in sorted(release.members, key=lambda r: r.app):
        d = manifests[m.app].descriptor()
        d["annotations"] = {REF_NAME: m.app, "dev.conveyor.repository": m.repository}
        entries.append(d)
    annotations = {
        "dev.conveyor.release.id": release.id,
        "dev.conveyor.release.name": release.name,
        "org.opencontainers.image.version": release.version,
    }
    if release.revision:
        annotations["org.opencontainers.image.revision"] = release.revision
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": RELEASE_ARTIFACT_TYPE,
        "manifests": entries,
        "annotations": annotations,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _mount_members(
    client: RegistryClient, repository: str, members: tuple[Release, ...]
) -> list[Manifest]:
    """Every member's manifest, mounted into the release's repository (an index's
    children must be there), side by side: each member is a few round trips that wait
    on no other's. A blob several members share (their base layers) is mounted once,
    not once per member: the registry answers 500 to concurrent writes of one blob's
    link, and a HEAD per member of it would be repeated round trips."""
    with ThreadPoolExecutor(max_workers=min(MOUNTS, len(members) or 1)) as pool:
        found = list(pool.map(lambda m: client.get_manifest(m.repository, m.digest), members))
        away = [(m, f) for m, f in zip(members, found, strict=True) if m.repository != repository]
        blobs: dict[str, tuple[dict[str, Any], str]] = {}
        for m, f in away:
            for d in [] if f.is_index else _blob_descriptors(f):
                blobs.setdefault(d["digest"], (d, m.repository))

        def mount(blob: tuple[dict[str, Any], str]) -> None:
            _Copier(client, blob[1], client, repository).blobs([blob[0]])

        def put(pair: tuple[Release, Manifest]) -> None:
            member, manifest = pair
            if manifest.is_index:
                _Copier(client, member.repository, client, repository).manifest(manifest)
            client.put_manifest(repository, member.digest, manifest.data, manifest.media_type)

        list(pool.map(mount, blobs.values()))
        list(pool.map(put, away))
    return found


def record_release(client: RegistryClient, release: ReleaseSet) -> RecordedRelease:
    """Put the release index (and the members it names) into the release repository,
    tagged with the release version. Idempotent: the same content is the same digest."""
    found = _mount_members(client, release.repository, release.members)
    manifests = {m.app: manifest for m, manifest in zip(release.members, found, strict=True)}
    data = index_document(release, manifests)
    policy = TagPolicy(frozenset())
    digest = client.put_manifest(
        release.repository, f"sha256:{hashlib.sha256(data).hexdigest()}", data, OCI_INDEX
    )
    policy.check(client, release.repository, release.version, digest)
    client.put_manifest(release.repository, release.version, data, OCI_INDEX)
    return RecordedRelease(release, digest)


def read_release(client: RegistryClient, repository: str, reference: str) -> dict[str, str]:
    """service → digest, as the release artifact at ``reference`` lists them."""
    body = client.get_manifest(repository, reference).json
    return {e["annotations"][REF_NAME]: e["digest"] for e in body.get("manifests") or []}


@dataclass
class _Tag:
    repository: str
    digest: str
    data: bytes
    media_type: str
    previous: str | None = None  # the digest the tag named before, for a restore


@dataclass
class SetPromotion:
    tag: str
    changed: list[str] = field(default_factory=list)  # repositories whose tag moved


class HalfTagged(ConveyorError):
    """A restore after a failed promotion could not put every tag back."""


def promote_set(
    client: RegistryClient, recorded: RecordedRelease, tag: str, *, policy: TagPolicy
) -> SetPromotion:
    """Move ``tag`` to every member and then to the release artifact, or to none.

    Members are read and then tagged side by side (each a few round trips that wait on
    no other's); the artifact is tagged last, so an environment's tag on it always means
    every member carries that tag too."""
    members = [_Tag(m.repository, m.digest, b"", "") for m in recorded.release.members]
    artifact = _Tag(recorded.release.repository, recorded.digest, b"", "")
    result = SetPromotion(tag)
    written: list[_Tag] = []
    with ThreadPoolExecutor(max_workers=min(MOUNTS, len(members) + 1)) as pool:
        list(pool.map(lambda t: _read(client, t, tag, policy), [*members, artifact]))
        try:
            for batch in ([t for t in members if t.data], [artifact] if artifact.data else []):
                _write(pool, client, tag, batch, written, result)
        except ConveyorError as exc:
            raise _restore(client, tag, written, exc) from exc
    log.info(
        "promoted release %s to %s (%d tags moved)",
        recorded.release.id[:12],
        tag,
        len(result.changed),
    )
    return result


def _read(client: RegistryClient, t: _Tag, tag: str, policy: TagPolicy) -> None:
    """What ``tag`` names now in ``t``'s repository (kept for a restore), and what to write."""
    before = policy.check(client, t.repository, tag, t.digest)
    if before != t.digest:
        # Its manifest is read only for a restore: by digest it cannot change meanwhile.
        t.previous = before
        target = client.get_manifest(t.repository, t.digest)
        t.data, t.media_type = target.data, target.media_type


def _write(
    pool: ThreadPoolExecutor,
    client: RegistryClient,
    tag: str,
    batch: list[_Tag],
    written: list[_Tag],
    result: SetPromotion,
) -> None:
    """PUT ``tag`` on every manifest of ``batch`` at once; the first refusal is raised
    once all have answered, with every one tried in ``written`` for the restore."""
    written.extend(batch)
    futures = [
        pool.submit(client.put_manifest, t.repository, tag, t.data, t.media_type) for t in batch
    ]
    refused: list[ConveyorError] = []
    for t, future in zip(batch, futures, strict=True):
        try:
            future.result()
        except ConveyorError as exc:
            refused.append(exc)
        else:
            result.changed.append(t.repository)
    if refused:
        raise refused[0]


def _restore(
    client: RegistryClient, tag: str, written: list[_Tag], cause: ConveyorError
) -> ConveyorError:
    left: list[str] = []
    for t in reversed(written):
        try:
            now = client.resolve(t.repository, tag)
            if now is None or now == t.previous:
                continue  # the PUT that failed did not move this one
            if t.previous is not None:
                old = client.get_manifest(t.repository, t.previous)
                client.put_manifest(t.repository, tag, old.data, old.media_type)
            else:
                # Distribution 2.x cannot remove a tag alone; a tag that did not exist
                # before is reported rather than deleted with its manifest's other tags.
                left.append(f"{t.repository}:{tag} (new; cannot be untagged)")
        except ConveyorError as exc:
            left.append(f"{t.repository}:{tag} ({exc})")
    if left:
        return HalfTagged(
            f"promotion to {tag} failed ({cause}) and these tags could not be restored: "
            + ", ".join(left)
        )
    return PushFailed(f"promotion to {tag} failed and every tag was put back: {cause}")


def kept_members(
    client: RegistryClient, repository: str, references: list[str]
) -> dict[str, set[str]]:
    """Member repository → the digests the release artifacts at ``references`` list.

    ``conveyor gc`` passes what each environment runs (its tag) and what it could roll
    back to (the earlier releases it ran), and keeps every digest found here in each
    member's repository: a release that lost one member could not be rolled back to.
    """
    keep: dict[str, set[str]] = {}
    for ref in references:
        body = client.get_manifest(repository, ref).json
        for entry in body.get("manifests") or []:
            member_repo = (entry.get("annotations") or {}).get(
                "dev.conveyor.repository", repository
            )
            keep.setdefault(member_repo, set()).add(entry["digest"])
    return keep


def member_url_environment(urls: dict[str, str]) -> dict[str, str]:
    """``CONVEYOR_URL_<SERVICE>`` for every member (``-`` becomes ``_``), so a check of
    one service can reach the others, as an end-to-end test through the front does."""
    return {f"CONVEYOR_URL_{name.upper().replace('-', '_')}": url for name, url in urls.items()}
