"""The one exception tree of conveyor.

Every client translates its transport's or SDK's failures into these classes at a
single boundary (one per outside system: ``clients.http.send`` for HTTP peers,
``clients.docker_engine.engine_errors`` for the Docker Engine, ``clients.vsphere`` for
pyVmomi, ``clients.trivy`` for the scanner), so tasks decide about retries by class
alone. Two kinds of ending are kept apart, as Kargo keeps *Failed* apart from
*Errored*: a ``Verdict`` is the run's outcome (the release was judged and refused),
every other ``ConveyorError`` is an error of a system or of the input::

    ConveyorError
    +-- TransientError                 worth another try
    |   +-- TransportError             peer unreachable or silent
    |   |   +-- ConnectFailed
    |   |   +-- RequestTimeout
    |   +-- ServerError                5xx (``status``)
    |   +-- Locked                     Marathon's 409 "locked" (``holders``)
    +-- TerminalError                  retrying cannot help; a person acts on the message
        +-- ConfigError                a pipeline file or setting (``problems``)
        +-- SecretNotFound
        +-- TLSVerificationFailed
        +-- AuthenticationFailed
        +-- PermissionDenied
        +-- NotFound
        +-- Rejected                   400/422 (``details``)
        +-- BuildFailed
        +-- PushFailed
        +-- ImmutableTagViolation
        +-- EvidenceMissing
        +-- ApprovalEvidenceInvalid    (``problems``)
        +-- SigningFailed
        +-- FreezeActive               a freeze window holds the environment
        +-- DeploymentFailed
        +-- HealthCheckFailed
        +-- LocalStackFailed
        +-- Verdict                    the run's outcome, not a system's error
            +-- ScanBlocked            a blocking finding, or no scan (fails closed)
            |   +-- VulnDbMissing
            +-- PreflightFailed        the cluster cannot take the release (``failures``)
            +-- PlacementViolation
            +-- IntegrationTestsFailed
            +-- VerificationFailed
            +-- ApprovalRejected
            +-- RolledBack

A ``Verdict`` is terminal too, so ``is_transient`` never retries one.
"""

from __future__ import annotations

from typing import Any


def _listed(message: str, lines: list[str]) -> str:
    return message + "".join(f"\n  {line}" for line in lines)


class ConveyorError(Exception):
    """Base of every error conveyor raises on purpose."""

    transient: bool = False


class TransientError(ConveyorError):
    """The same call may succeed later: retrying is the right move."""

    transient = True


class TerminalError(ConveyorError):
    """Retrying cannot help; a person has to act on the message."""


# --- configuration ---------------------------------------------------------


class ConfigError(TerminalError):
    """A pipeline file or setting is wrong; ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        super().__init__(f"invalid pipeline file {source}:\n{lines}")


class SecretNotFound(TerminalError):
    """A credential reference points at nothing (the message names the reference)."""


# --- transport (shared by every HTTP client) --------------------------------


class TransportError(TransientError):
    """The peer could not be reached or did not answer in time."""


class ConnectFailed(TransportError):
    pass


class RequestTimeout(TransportError):
    pass


class TLSVerificationFailed(TerminalError):
    """The peer's certificate did not verify against the configured trust."""


class ServerError(TransientError):
    """The peer answered 5xx."""

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)


class AuthenticationFailed(TerminalError):
    """Credentials were refused; retrying with the same ones would only lock the account."""


class PermissionDenied(TerminalError):
    pass


class NotFound(TerminalError):
    pass


class Rejected(TerminalError):
    """The peer refused the request as invalid (400/422); ``details`` says why."""

    def __init__(self, message: str, details: object = None) -> None:
        self.details = details
        super().__init__(message)


class Locked(TransientError):
    """A resource is busy (Marathon's 409 "locked by a deployment")."""

    def __init__(self, message: str, holders: list[str] | None = None) -> None:
        self.holders = holders or []
        super().__init__(message)


# --- pipeline stages: errors of a step -------------------------------------


class BuildFailed(TerminalError):
    pass


class PushFailed(TerminalError):
    pass


class ImmutableTagViolation(TerminalError):
    """A version tag would be moved to another digest."""


class EvidenceMissing(TerminalError):
    """The digest lacks the proof a stage requires before it may go on."""


class DeploymentFailed(TerminalError):
    pass


class HealthCheckFailed(TerminalError):
    pass


class SigningFailed(TerminalError):
    """ssh-keygen could not sign (no such key, no agent, wrong passphrase)."""


class ApprovalEvidenceInvalid(TerminalError):
    """Approval evidence attached to a digest does not verify; ``problems`` says what."""

    def __init__(self, message: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(_listed(message, problems))


class FreezeActive(TerminalError):
    """The environment is inside a freeze window; only a break-glass promotion goes on."""


class LocalStackFailed(TerminalError):
    """A local service could not start (port taken, binary missing); the message says what to do."""


# --- verdicts: the run's outcome --------------------------------------------


class Verdict(TerminalError):
    """The release was judged and refused: the run *failed*, no system *errored*."""


class ScanBlocked(Verdict):
    """The scan policy found a blocking finding, or could not scan and fails closed."""


class VulnDbMissing(ScanBlocked):
    """Trivy has no vulnerability database to scan with; the policy says fail or warn."""


class PreflightFailed(Verdict):
    def __init__(self, message: str, failures: list[str]) -> None:
        self.failures = failures
        super().__init__(_listed(message, failures))


class PlacementViolation(Verdict):
    pass


class IntegrationTestsFailed(Verdict):
    pass


class VerificationFailed(Verdict):
    pass


class ApprovalRejected(Verdict):
    """A person rejected the release, or nobody decided in time.

    ``statement`` is the approval evidence the gate made of the decision (the signed
    rejection, or the timeout with the answers counted until then), when it made one.
    """

    def __init__(self, message: str, statement: dict[str, Any] | None = None) -> None:
        self.statement = statement
        super().__init__(message)


class RolledBack(Verdict):
    """Production failed and was returned to the previous release."""


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is worth a retry; used by every task's retry condition."""
    return isinstance(exc, ConveyorError) and exc.transient


class ApprovalTimedOut(ApprovalRejected):
    """Nobody decided before the request's deadline: a rejection."""


class OlderRelease(TerminalError):
    """A release older than the one the environment runs, not asked for as a rollback."""
