"""Fault switches that tests flip over ``/_sim/faults`` (see the package docstring)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from conveyor.sim.marathon.model import new_id, normalize_id

KINDS = ("health", "unavailable", "hang_deployment", "lock", "unit_unhealthy")


class BadFault(ValueError):
    pass


@dataclass
class Fault:
    id: str
    kind: str
    app: str | None = None
    count: int | None = None
    until: float | None = None
    unit: str | None = None
    status: int = 503
    cause: str = "fault injected by the simulator"
    victims: set[str] = field(default_factory=set)

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "app": self.app,
            "count": self.count,
            "unit": self.unit,
            "remainingSeconds": None
            if self.until is None
            else round(max(0.0, self.until - now), 3),
            "victims": sorted(self.victims),
        }


def _number(spec: dict[str, Any], key: str) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadFault(f"'{key}' must be a number >= 0")
    return float(value)


def parse(spec: Any) -> Fault:
    """A fault from the admin endpoint's JSON body; raises BadFault saying what is wrong."""
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise BadFault(f"'kind' must be one of {', '.join(KINDS)}")
    kind = spec["kind"]
    duration = _number(spec, "duration")
    count = _number(spec, "count")
    app = spec.get("app")
    if kind in ("health", "hang_deployment", "lock") and not isinstance(app, str):
        raise BadFault(f"a '{kind}' fault needs 'app' (an app id)")
    if kind == "lock" and duration is None:
        raise BadFault("a 'lock' fault needs 'duration' (seconds)")
    if kind == "unit_unhealthy" and not isinstance(spec.get("unit"), str):
        raise BadFault("a 'unit_unhealthy' fault needs 'unit' (e.g. dcos-marathon.service)")
    status = int(spec.get("status", 503))
    return Fault(
        id=new_id(),
        kind=kind,
        app=normalize_id(app) if isinstance(app, str) else None,
        count=None if count is None else int(count),
        until=None if duration is None else time.monotonic() + duration,
        unit=spec.get("unit"),
        status=status,
        cause=str(spec.get("cause") or "fault injected by the simulator"),
    )


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self, kind: str | None = None) -> int:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if kind is not None and f.kind != kind]
            return before - len(self._faults)

    def _active(self, kind: str) -> list[Fault]:
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f.active(now)]
            return [f for f in self._faults if f.kind == kind]

    def unavailable(self) -> int | None:
        """The status to answer every API route with, or None."""
        found = self._active("unavailable")
        return found[0].status if found else None

    def health_failure(self, app_id: str, task_id: str) -> str | None:
        """The injected failure cause for this task's probe, or None to really probe."""
        for fault in self._active("health"):
            if fault.app != app_id:
                continue
            if fault.count is None or task_id in fault.victims:
                return fault.cause
            with self._lock:
                if len(fault.victims) < fault.count:
                    fault.victims.add(task_id)
                    return fault.cause
        return None

    def hangs(self, app_id: str) -> bool:
        return any(f.app == app_id for f in self._active("hang_deployment"))

    def unhealthy_units(self) -> set[str]:
        return {f.unit for f in self._active("unit_unhealthy") if f.unit}

    def to_json(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            return [f.to_json(now) for f in self._faults if f.active(now)]
