"""Proof that travels with the image: evidence as OCI artifacts referring to its digest.

Each record (scan report, integration results, approval) is an OCI image manifest with
an ``artifactType``, the image as ``subject``, the empty config and one JSON layer.
Registries with the referrers API index it themselves; for the others (distribution
2.8) the ``sha256-<hex>`` tag holds an OCI index of the referrers, updated per attach.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from conveyor.clients.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient, referrers_tag
from conveyor.errors import EvidenceMissing, NotFound, PushFailed
from conveyor.publish import default_lock_dir, tag_lock

EVIDENCE_PREFIX = "application/vnd.conveyor.evidence."
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
CREATED = "org.opencontainers.image.created"
KIND = "dev.conveyor.evidence.kind"
ATTACH_ATTEMPTS = 5


def artifact_type(kind: str) -> str:
    return f"{EVIDENCE_PREFIX}{kind}.v1+json"


# Test results of the first environment ("integration") and of later ones ("verification").
TEST_KINDS = ("integration", "verification")


@dataclass(frozen=True)
class Evidence:
    kind: str
    digest: str
    created: dt.datetime
    payload: dict[str, Any]

    @property
    def fields(self) -> dict[str, Any]:
        """The record's own fields: an in-toto Statement's predicate, else the payload."""
        predicate = self.payload.get("predicate")
        if "_type" in self.payload and isinstance(predicate, dict):
            return predicate
        return self.payload

    @property
    def environment(self) -> str | None:
        env = self.fields.get("environment")
        return str(env) if env is not None else None

    @property
    def passed(self) -> bool:
        """Integration results pass with no failures; approvals when approved."""
        p = self.fields
        if self.kind in TEST_KINDS:
            return int(p.get("failed", 1)) == 0 and int(p.get("passed", 0)) > 0
        if self.kind == "approval":
            return p.get("decision") == "approve"
        return p.get("passed") is True


def _manifest(kind: str, subject: dict[str, Any], layer: dict[str, Any], created: str) -> bytes:
    empty = {
        "mediaType": EMPTY_TYPE,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
        "data": base64.b64encode(EMPTY).decode(),
    }
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type(kind),
        "config": empty,
        "layers": [{"mediaType": "application/json", **layer}],
        "subject": subject,
        "annotations": {CREATED: created, KIND: kind},
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def attach_evidence(
    client: RegistryClient,
    repo: str,
    subject_digest: str,
    kind: str,
    payload: dict[str, Any],
    *,
    created: dt.datetime | None = None,
) -> str:
    """Attach ``payload`` as ``kind`` evidence to the image; returns the artifact's digest.

    One attach to an image at a time on this machine: the fallback index is a
    read-modify-write the registry cannot make conditional, and runs attaching to one
    image at once (eight ships of one commit) each wrote the index they had read, so a
    record was lost; docker-registry also answered 500 to a read of a tag or blob link
    another request was writing. The index's re-read still catches another machine.
    """
    subject = client.head_manifest(repo, subject_digest)
    stamp = (created or dt.datetime.now(dt.UTC)).isoformat()
    with tag_lock(default_lock_dir(), client.address, repo, referrers_tag(subject_digest)):
        layer = client.push_blob(repo, json.dumps(payload, sort_keys=True, default=str).encode())
        client.push_blob(repo, EMPTY)
        data = _manifest(kind, subject, layer, stamp)
        digest, indexed = client.put_referrer(repo, data)
        if not indexed:
            descriptor = {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(data),
                "artifactType": artifact_type(kind),
                "annotations": {CREATED: stamp, KIND: kind},
            }
            _add_to_referrers_tag(client, repo, subject_digest, descriptor)
    return digest


def _add_to_referrers_tag(
    client: RegistryClient, repo: str, subject: str, descriptor: dict[str, Any]
) -> None:
    """Read-modify-write of the fallback index, re-read to catch a concurrent writer."""
    tag = referrers_tag(subject)
    for _ in range(ATTACH_ATTEMPTS):
        entries = [d for d in client.referrers_from_tag(repo, subject) if d.get("digest")]
        if not any(d["digest"] == descriptor["digest"] for d in entries):
            entries.append(descriptor)
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
            client.put_manifest(repo, tag, json.dumps(index).encode(), OCI_INDEX)
        if any(
            d.get("digest") == descriptor["digest"]
            for d in client.referrers_from_tag(repo, subject)
        ):
            return
    raise PushFailed(f"{repo}:{tag} kept losing evidence {descriptor['digest']} to other writers")


def remove_from_referrers_tag(
    client: RegistryClient, repo: str, subject: str, digests: set[str]
) -> None:
    """Drop deleted artifacts from the fallback index (deleting the index when empty),
    under the lock an attach takes, so a record attached meanwhile is not dropped."""
    tag = referrers_tag(subject)
    with tag_lock(default_lock_dir(), client.address, repo, tag):
        entries = client.referrers_from_tag(repo, subject)
        kept = [d for d in entries if d.get("digest") not in digests]
        if len(kept) == len(entries):
            return
        if kept:
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": kept}
            client.put_manifest(repo, tag, json.dumps(index).encode(), OCI_INDEX)
            return
        index_digest = client.resolve(repo, tag)
        if index_digest is not None:
            client.delete_manifest(repo, index_digest)


def read_evidence(
    client: RegistryClient, repo: str, subject_digest: str, kinds: Iterable[str] | None = None
) -> list[Evidence]:
    """Every evidence record of the image, oldest first; records not about it are ignored."""
    wanted = set(kinds) if kinds is not None else None
    found: list[Evidence] = []
    for d in client.referrers(repo, subject_digest):
        kind = (d.get("annotations") or {}).get(KIND)
        if not str(d.get("artifactType", "")).startswith(EVIDENCE_PREFIX):
            continue
        if wanted is not None and kind not in wanted:
            continue
        try:
            manifest = client.get_manifest(repo, d["digest"]).json
        except NotFound:
            continue
        # The fallback index is a mutable tag: trust only what the signed-by-digest
        # manifest itself says about its subject.
        if (manifest.get("subject") or {}).get("digest") != subject_digest:
            continue
        annotations = manifest.get("annotations") or {}
        payload = json.loads(client.get_blob(repo, manifest["layers"][0]["digest"]))
        created = dt.datetime.fromisoformat(annotations[CREATED])
        found.append(Evidence(annotations[KIND], d["digest"], created, payload))
    return sorted(found, key=lambda e: e.created)


def require_evidence(
    client: RegistryClient,
    repo: str,
    subject_digest: str,
    kinds: Iterable[str] = ("integration",),
    environment: str | None = None,
) -> list[Evidence]:
    """The latest record of each kind must exist and pass, else EvidenceMissing.

    ``environment`` narrows integration results and approvals to that environment.
    """
    kinds = list(kinds)
    records = read_evidence(client, repo, subject_digest, kinds)
    problems: list[str] = []
    latest: list[Evidence] = []
    for kind in kinds:
        mine = [e for e in records if e.kind == kind]
        if environment is not None and kind in (*TEST_KINDS, "approval"):
            mine = [e for e in mine if e.environment == environment]
        where = f" for {environment}" if environment else ""
        if not mine:
            problems.append(f"no {kind} evidence{where}")
        elif not mine[-1].passed:
            problems.append(f"latest {kind} evidence{where} ({mine[-1].digest}) did not pass")
        else:
            latest.append(mine[-1])
    if problems:
        raise EvidenceMissing(f"{repo}@{subject_digest}: " + "; ".join(problems))
    return latest
