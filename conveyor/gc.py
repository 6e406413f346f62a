"""Housekeeping: keep the newest N releases per repository, never what production needs.

``plan_gc`` only reads and says what would go and why (``conveyor gc --dry-run`` prints
it); ``apply_gc`` deletes the planned manifests and their evidence. Layer blobs are
reclaimed by the registry's own garbage collector once nothing references them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from conveyor.clients.registry import RegistryClient, referrers_tag
from conveyor.errors import NotFound
from conveyor.evidence import CREATED
from conveyor.promotion import TagPolicy

log = logging.getLogger(__name__)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class GcItem:
    digest: str
    tags: tuple[str, ...]
    created: dt.datetime
    reason: str


@dataclass
class GcPlan:
    repository: str
    keep: list[GcItem] = field(default_factory=list)
    delete: list[GcItem] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per release, for ``--dry-run``."""
        out = []
        for verb, items in (("keep", self.keep), ("delete", self.delete)):
            for i in items:
                tags = ",".join(i.tags) or "-"
                out.append(f"{verb:6} {self.repository}@{i.digest[:19]} [{tags}] {i.reason}")
        return out


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def created_at(client: RegistryClient, repo: str, digest: str) -> dt.datetime:
    """The image config's ``created``, else the newest evidence's time, else the epoch."""
    manifest = client.get_manifest(repo, digest)
    body = manifest.json
    if manifest.is_index and body.get("manifests"):
        return created_at(client, repo, body["manifests"][0]["digest"])
    config = body.get("config") or {}
    if config.get("digest") and config.get("size", 0) < 1_000_000:
        stamp = _parse_time(json.loads(client.get_blob(repo, config["digest"])).get("created"))
        if stamp is not None:
            return stamp
    times = [
        _parse_time((d.get("annotations") or {}).get(CREATED))
        for d in client.referrers(repo, digest)
    ]
    return max((t for t in times if t is not None), default=EPOCH)


def _releases(client: RegistryClient, repo: str) -> dict[str, list[str]]:
    """digest -> its tags, leaving out the referrers-schema tags."""
    by_digest: dict[str, list[str]] = {}
    for tag in client.list_tags(repo):
        if tag.startswith("sha256-"):
            continue
        digest = client.resolve(repo, tag)
        if digest is not None:
            by_digest.setdefault(digest, []).append(tag)
    return by_digest


def plan_gc(
    client: RegistryClient,
    repo: str,
    *,
    keep: int,
    protected: Iterable[str] = (),
    policy: TagPolicy | None = None,
) -> GcPlan:
    """Which releases stay (newest ``keep``, moving-tagged, protected) and which go."""
    policy = policy or TagPolicy()
    protected = set(protected)
    releases = _releases(client, repo)
    dated = sorted(
        ((created_at(client, repo, d), d) for d in releases), key=lambda t: t[0], reverse=True
    )
    plan = GcPlan(repo)
    for rank, (created, digest) in enumerate(dated):
        tags = tuple(sorted(releases[digest]))
        moving = [t for t in tags if policy.is_moving(t)]
        if digest in protected:
            reason = "protected (running in production or needed for its rollback)"
        elif moving:
            reason = f"named by moving tag {', '.join(moving)}"
        elif rank < keep:
            reason = f"among the newest {keep}"
        else:
            plan.delete.append(GcItem(digest, tags, created, f"older than the newest {keep}"))
            continue
        plan.keep.append(GcItem(digest, tags, created, reason))
    return plan


def apply_gc(client: RegistryClient, plan: GcPlan) -> list[str]:
    """Delete each planned release with its evidence; returns the deleted digests."""
    repo = plan.repository
    deleted: list[str] = []
    for item in plan.delete:
        for ref in client.referrers(repo, item.digest):
            with contextlib.suppress(NotFound):
                client.delete_manifest(repo, ref["digest"])
        index = client.resolve(repo, referrers_tag(item.digest))
        if index is not None:
            client.delete_manifest(repo, index)
        try:
            client.delete_manifest(repo, item.digest)
        except NotFound:
            continue
        log.info("gc deleted %s@%s (%s)", repo, item.digest, item.reason)
        deleted.append(item.digest)
    return deleted
