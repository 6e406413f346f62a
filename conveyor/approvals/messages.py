"""What people are told about an approval request: when it starts, reminders, the end."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestFacts:
    app: str
    version: str
    digest: str
    environment: str
    run_id: str
    ui_url: str | None
    evidence: list[str]
    progress: str = ""

    @property
    def command(self) -> str:
        return f"conveyor approve {self.run_id} --as NAME --key ~/.ssh/id_ed25519"


def waiting(facts: RequestFacts) -> tuple[str, str]:
    """Subject and body of the notice that a release waits for approval."""
    subject = f"{facts.app} {facts.version} waits for approval for {facts.environment}"
    lines = [
        f"{facts.app} {facts.version} ({facts.digest}) waits for approval for {facts.environment}.",
        *(f"- {line}" for line in facts.evidence),
        *([facts.progress] if facts.progress else []),
        f"Approve: {facts.command}",
        *([f"Run: {facts.ui_url}"] if facts.ui_url else []),
    ]
    return subject, "\n".join(lines)


def decided(facts: RequestFacts, outcome: str, detail: str) -> tuple[str, str]:
    """Subject and body of the notice that a request ended: approved, rejected, timed out, superseded."""
    subject = f"{facts.app} {facts.version} for {facts.environment}: {outcome}"
    body = (
        f"{facts.app} {facts.version} ({facts.digest}) for {facts.environment}: {outcome}. {detail}"
    )
    return subject, body.strip()


def reminder_body(app: str, environment: str) -> str:
    """The reminder an automation sends; Prefect fills in the run from the triggering event."""
    return (
        f"Reminder: a release of {app} still waits for approval for {environment}: flow run "
        "{{ event.resource.get('prefect.resource.name') }} "
        "({{ event.resource.id.removeprefix('prefect.flow-run.') }}). "
        "See `conveyor approvals` and answer with `conveyor approve RUN --as NAME --key KEY`."
    )
