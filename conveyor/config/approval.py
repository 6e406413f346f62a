"""Who may approve a release, how they prove it, and when nothing may be promoted."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from conveyor.config.base import ApproverName, Duration, StrictModel, approver_problem


class Approver(StrictModel):
    """A person on an approvers list; ``key`` is their SSH public key (``ssh-ed25519 AAAA…``)."""

    name: ApproverName
    email: str | None = Field(default=None, pattern=r"^[^\s@]+@[^\s@]+$")
    key: str | None = Field(default=None, pattern=r"^(ssh-|ecdsa-|sk-)\S+ \S+")

    @field_validator("key")
    @classmethod
    def _decodes(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                base64.b64decode(v.split()[1], validate=True)
            except (binascii.Error, IndexError):
                raise ValueError("not an OpenSSH public key: its base64 does not decode") from None
        return v


def _plain_name(value: object) -> object:
    # The typed-identity form stays valid: "alice" is an approver known only by name.
    if not isinstance(value, str):
        return value
    problem = approver_problem(value)
    if problem:
        raise ValueError(problem)
    return {"name": value}


class NotifyConfig(StrictModel):
    """A Prefect notification block (Slack, Teams, custom webhook...) by its name."""

    block: str = Field(min_length=1)


class ApprovalConfig(StrictModel):
    approvers: list[Annotated[Approver, BeforeValidator(_plain_name)]] = Field(default_factory=list)
    # git's allowed-signers format ("alice@corp.example ssh-ed25519 AAAA..."), relative
    # to the pipeline file; its principals are approvers as well.
    allowed_signers: Path | None = None
    # typed: the approver is whoever the answer says (the record says it was not verified);
    # signed: only answers signed by the approver's SSH key count.
    identity: Literal["typed", "signed"] = "typed"
    required: int = Field(default=1, ge=1)
    allow_self_approval: bool = False
    timeout: Duration = dt.timedelta(hours=24)
    notify: NotifyConfig | None = None
    remind_every: Duration | None = None
    # How old an answer may be when a run acts on it (a replay after a Retry, say);
    # unset means the timeout.
    valid_for: Duration | None = None
    # Only the demo's file sets this: --auto-approve is refused for every other gate.
    allow_auto_approve: bool = False

    @property
    def answer_validity(self) -> dt.timedelta:
        return self.valid_for if self.valid_for is not None else self.timeout

    @property
    def names(self) -> list[str]:
        """The approvers named inline (those of ``allowed_signers`` need its file read)."""
        return [a.name for a in self.approvers]

    @model_validator(mode="after")
    def _someone_may_approve(self) -> ApprovalConfig:
        if not self.approvers and self.allowed_signers is None:
            raise ValueError(
                "approvers: List should have at least 1 item (or name an 'allowed_signers' file)"
            )
        names = self.names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"approvers must be unique; repeated: {', '.join(dupes)}")
        if self.identity == "signed":
            keyless = [a.name for a in self.approvers if a.key is None]
            if keyless:
                raise ValueError(
                    "identity: signed needs a 'key' for every approver; missing for "
                    + ", ".join(keyless)
                )
        if self.remind_every is not None and self.remind_every < dt.timedelta(seconds=10):
            # Reminders are Prefect automations, whose proactive triggers wait 10 s at least.
            raise ValueError("remind_every must be at least 10s")
        if self.remind_every is not None and self.notify is None:
            raise ValueError("remind_every needs notify: {block: NAME} to remind through")
        if self.valid_for is not None and self.valid_for <= dt.timedelta(0):
            raise ValueError("valid_for must be positive")
        return self


class FreezeWindow(StrictModel):
    """A time nothing is promoted: recurring (``cron`` + ``duration``) or ``from``/``to`` dates.

    ``to`` as a date is inclusive (``to: 2027-01-04`` freezes all of the 4th), because
    that is how people read a holiday calendar.
    """

    model_config = {**StrictModel.model_config, "populate_by_name": True}

    cron: str | None = None
    duration: Duration | None = None
    start: dt.date | dt.datetime | None = Field(default=None, alias="from")
    to: dt.date | dt.datetime | None = None
    timezone: str = "UTC"
    reason: str = ""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name like Europe/Berlin)") from None
        return v

    @model_validator(mode="after")
    def _one_form(self) -> FreezeWindow:
        recurring = self.cron is not None or self.duration is not None
        dated = self.start is not None or self.to is not None
        if recurring == dated:
            raise ValueError("a freeze window has either 'cron' and 'duration', or 'from' and 'to'")
        if recurring and (self.cron is None or self.duration is None):
            raise ValueError("a recurring freeze window needs both 'cron' and 'duration'")
        if dated and (self.start is None or self.to is None):
            raise ValueError("a dated freeze window needs both 'from' and 'to'")
        if self.cron is not None:
            _check_cron(self.cron)
        return self

    def describe(self) -> str:
        what = (
            f"cron {self.cron!r} for {self.duration.total_seconds() / 3600:g}h"
            if self.cron and self.duration
            else f"{self.start} to {self.to}"
        )
        return f"{self.reason or 'freeze'} ({what}, {self.timezone})"


def _check_cron(expr: str) -> None:
    from cronsim import CronSim, CronSimError

    try:
        CronSim(expr, dt.datetime(2026, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"cron {expr!r} is not a valid cron expression: {exc}") from None
