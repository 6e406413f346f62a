"""Housekeeping: keep the newest N releases per repository, never what production needs.

``plan_gc`` only reads and says what would go and why (``conveyor gc --dry-run`` prints
it); ``apply_gc`` deletes the planned manifests and their evidence. Layer blobs are
reclaimed by the registry's own garbage collector once nothing references them.

For a release of several services (``plan_release_gc``) the release artifacts decide:
every digest a kept artifact lists stays in its member's repository whatever its age,
since a member carried unchanged into newer releases keeps its first build's date and
a release that lost one member could be neither deployed nor rolled back to.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from conveyor.clients.registry import RegistryClient, referrers_tag
from conveyor.errors import NotFound
from conveyor.evidence import CREATED
from conveyor.promotion import TagPolicy
from conveyor.release_set import kept_members

log = logging.getLogger(__name__)
PROTECTED = "protected (running in production or needed for its rollback)"
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
    """The image config's ``created``, else the newest evidence's time, else the epoch.

    An index is as new as its newest entry: a release artifact whose first member was
    carried from an older release is not that old."""
    manifest = client.get_manifest(repo, digest)
    body = manifest.json
    if manifest.is_index and body.get("manifests"):
        return max(created_at(client, repo, e["digest"]) for e in body["manifests"])
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
    protected: Iterable[str] | Mapping[str, str] = (),
    policy: TagPolicy | None = None,
) -> GcPlan:
    """Which releases stay (newest ``keep``, moving-tagged, protected) and which go.

    ``protected`` may map each digest to the reason it is protected."""
    policy = policy or TagPolicy()
    why = dict(protected) if isinstance(protected, Mapping) else dict.fromkeys(protected, PROTECTED)
    releases = _releases(client, repo)
    dated = sorted(
        ((created_at(client, repo, d), d) for d in releases), key=lambda t: t[0], reverse=True
    )
    plan = GcPlan(repo)
    for rank, (created, digest) in enumerate(dated):
        tags = tuple(sorted(releases[digest]))
        moving = [t for t in tags if policy.is_moving(t)]
        if digest in why:
            reason = why[digest]
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


@dataclass
class ReleaseGcPlan:
    """The release artifacts' plan, then one per member repository."""

    artifacts: GcPlan
    members: list[GcPlan]
    listed: set[str]  # every digest a kept release artifact lists

    @property
    def plans(self) -> list[GcPlan]:
        return [self.artifacts, *self.members]

    @property
    def delete(self) -> list[GcItem]:
        return [i for p in self.plans for i in p.delete]

    def lines(self) -> list[str]:
        return [line for p in self.plans for line in p.lines()]


def plan_release_gc(
    client: RegistryClient,
    repository: str,
    member_repositories: Iterable[str],
    *,
    keep: int,
    protected: Iterable[str] = (),
    running: Mapping[str, Iterable[str]] | None = None,
    policy: TagPolicy | None = None,
) -> ReleaseGcPlan:
    """What goes of a release of several services: the artifacts in ``repository``
    beyond the newest ``keep`` that no environment runs or could roll back to
    (``protected``), and in each member repository what no kept artifact lists, no
    instance runs (``running``: repository -> image digests) and is not among its newest.

    A protected artifact the registry no longer holds raises NotFound: without it the
    members its rollback needs cannot be told apart, so nothing is deleted.
    """
    artifacts = plan_gc(client, repository, keep=keep, protected=protected, policy=policy)
    kept = [i.digest for i in artifacts.keep]
    listed = kept_members(client, repository, kept + sorted(set(protected) - set(kept)))
    running = running or {}
    plans = []
    for repo in dict.fromkeys(member_repositories):
        if repo == repository:
            continue  # a member in the artifacts' repository is planned with them
        why = dict.fromkeys(running.get(repo, ()), "running (an instance runs it now)")
        for digest in listed.get(repo, set()) - why.keys():
            why[digest] = "listed by a release that is kept"
        plans.append(plan_gc(client, repo, keep=keep, protected=why, policy=policy))
    return ReleaseGcPlan(artifacts, plans, set().union(*listed.values()))


def apply_release_gc(client: RegistryClient, plan: ReleaseGcPlan) -> list[str]:
    """Delete the planned artifacts, the member manifests mounted beside them that no
    kept artifact lists, then the planned member images; returns the deleted digests.

    Member images go last, so a crash never leaves a kept artifact naming a gone image;
    the mounted copies go just before their artifact, which a rerun still finds (tagged)
    and so finds them again: untagged, they could not be found otherwise.
    """
    repo = plan.artifacts.repository
    for item in plan.artifacts.delete:
        with contextlib.suppress(NotFound):
            body = client.get_manifest(repo, item.digest).json
            for entry in body.get("manifests") or []:
                if entry["digest"] not in plan.listed:
                    with contextlib.suppress(NotFound):
                        client.delete_manifest(repo, entry["digest"])
    deleted = apply_gc(client, plan.artifacts)
    for member in plan.members:
        deleted += apply_gc(client, member)
    return deleted
