"""Marathon's launch queue: instances waiting for an offer that fits, as ``/v2/queue`` shows.

Each launch attempt of a waiting app is one round of offers (one per agent, at most once
per OFFER_INTERVAL_S like Mesos's allocation interval); an agent that cannot take the
task declines with the first reason of Marathon's funnel (NoOfferMatchReason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conveyor.sim.marathon.model import now_iso

OFFER_INTERVAL_S = 1.0
REASON_FUNNEL = (
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
)


@dataclass
class LaunchStats:
    """One app's launch attempt: what Marathon's QueuedInstanceInfoWithStatistics holds."""

    left: int = 0
    since: str | None = None
    processed: int = 0
    unused: int = 0
    last_unused_at: str | None = None
    last_used_at: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    last_by_agent: dict[str, str] = field(default_factory=dict)
    next_offer_at: float = 0.0

    def offers(self, declined: dict[str, str], used: bool, now: float) -> None:
        """Record one round: ``declined`` maps agent id to its reason; ``used`` if one fit."""
        stamp = now_iso()
        self.processed += len(declined) + int(used)
        self.unused += len(declined)
        for agent, reason in declined.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            self.last_by_agent[agent] = reason
        if declined:
            self.last_unused_at = stamp
        if used:
            self.last_used_at = stamp
        else:
            self.next_offer_at = now + OFFER_INTERVAL_S

    def waiting(self, left: int) -> None:
        """Set how many instances are left to launch; 0 ends the launch attempt."""
        self.left = left
        if left == 0:
            self.since, self.processed, self.unused = None, 0, 0
            self.rejected, self.last_by_agent = {}, {}
            self.last_unused_at = self.last_used_at = None
        elif self.since is None:
            self.since = now_iso()


def _funnel(processed: int, declined: dict[str, int]) -> list[dict[str, Any]]:
    """Marathon's declinedOfferSteps: each reason sees the offers earlier reasons let by."""
    steps = []
    for reason in REASON_FUNNEL:
        count = declined.get(reason, 0)
        steps.append({"reason": reason, "declined": count, "processed": processed})
        processed -= count
    return steps


def queue_item(
    app: dict[str, Any], stats: LaunchStats, delay_left_s: float, role: str = "*"
) -> dict[str, Any]:
    """One QueueApp of ``/v2/queue``."""
    last: dict[str, int] = {}
    for reason in stats.last_by_agent.values():
        last[reason] = last.get(reason, 0) + 1
    summary: dict[str, Any] = {
        "processedOffersCount": stats.processed,
        "unusedOffersCount": stats.unused,
        "rejectSummaryLastOffers": _funnel(len(stats.last_by_agent), last),
        "rejectSummaryLaunchAttempt": _funnel(stats.processed, stats.rejected),
    }
    if stats.last_unused_at:
        summary["lastUnusedOfferAt"] = stats.last_unused_at
    if stats.last_used_at:
        summary["lastUsedOfferAt"] = stats.last_used_at
    left = max(0.0, delay_left_s)
    return {
        "app": app,
        "count": stats.left,
        "role": role,
        "delay": {"timeLeftSeconds": round(left), "overdue": left == 0},
        "since": stats.since,
        "processedOffersSummary": summary,
    }
