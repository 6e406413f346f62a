"""Integration tests and production verification of one environment: health, the HTTP
checks, the test command and, where vCenter is configured, the spread of the instances
over ESXi hosts. Every check runs and is reported; the caller decides what a failure means."""

from __future__ import annotations

import time

from conveyor.config import EnvironmentConfig
from conveyor.connections import Connections
from conveyor.drivers.base import DeployedState
from conveyor.errors import PlacementViolation
from conveyor.preflight.vsphere import check_placement
from conveyor.probe import CheckResult, run_http_checks, run_test_command, wait_healthy
from conveyor.release import Release, Verification
from conveyor.release_set import member_url_environment

PLACEMENT = "placement over ESXi hosts"


RELEASE = "runs the release"


def expected_digest(release: Release, member: str | None) -> str | None:
    """The image an instance of ``member`` must run in ``release`` (None: no such member)."""
    if not release.members:
        return release.digest
    try:
        return release.member(member or "").digest
    except KeyError:
        return None


def release_checks(state: DeployedState, release: Release) -> list[CheckResult]:
    """A failed check for every instance that runs another image than ``release``.

    What a cluster lists is not what the release is: during a stuck rollout, or after
    someone's manual deploy, an instance of another release would answer the checks.
    """
    return [
        CheckResult(
            f"{RELEASE} @ {i.url}",
            False,
            f"{i.url} on {i.agent or i.host} runs {i.digest or 'an image nobody can name'}, "
            f"not {release.version} ({expected_digest(release, i.member) or 'no such member'})",
            0.0,
        )
        for i in state.instances
        if i.digest is None or i.digest != expected_digest(release, i.member)
    ]


def member_urls(state: DeployedState, release: Release) -> dict[str, list[str]]:
    """Service → the URLs of its instances that run ``release`` (one key for one app)."""
    urls: dict[str, list[str]] = {}
    for i in state.instances:
        if i.digest is not None and i.digest == expected_digest(release, i.member):
            urls.setdefault(i.member or release.app, []).append(i.url)
    return urls


def run_checks(
    connections: Connections, env: EnvironmentConfig, release: Release
) -> list[CheckResult]:
    """What runs in ``env`` now, checked: every result, passed or not. The checks go to
    the instances of ``release`` only; any other instance is a failed check naming it.
    In a release of several services every member's instances are checked, and the
    test command gets each member's URL as ``CONVEYOR_URL_<SERVICE>``."""
    state = connections.driver(env).status()
    results = release_checks(state, release)
    by_member = member_urls(state, release)
    urls = [u for member_urls in by_member.values() for u in member_urls]
    absent = [s.app for s in release.members if s.app not in by_member]
    results += [CheckResult(f"{RELEASE}: {a}", False, f"no instance of {a}", 0.0) for a in absent]
    if not urls:
        return results or [CheckResult(RELEASE, False, f"nothing runs in {env.name}", 0.0)]
    http = connections.http()
    wait_healthy(
        http,
        urls,
        env.health.path,
        env.health.expect_status,
        env.health.timeout_s,
        env.health.interval_s,
    )
    for url in urls:
        for result in run_http_checks(http, url, env.tests.http):
            name = result.name if len(urls) == 1 else f"{result.name} @ {url}"
            results.append(CheckResult(name, result.passed, result.detail, result.duration_s))
    if env.tests.command:
        each = member_url_environment({m: found[0] for m, found in by_member.items()})
        results.append(
            run_test_command(env.tests.command, urls, env.tests.command_timeout_s, extra_env=each)
        )
    placement = placement_check(connections, env, state)
    if placement is not None:
        results.append(placement)
    return results


def placement_check(
    connections: Connections, env: EnvironmentConfig, state: DeployedState
) -> CheckResult | None:
    """Do the instances spread over enough ESXi hosts that one host failure cannot take
    the app down? None where no vCenter is configured or nothing runs."""
    cfg = env.preflight.vsphere
    if cfg is None or not state.instances:
        return None
    agents = [i.agent or i.host for i in state.instances]
    started = time.monotonic()
    client = connections.vsphere(env)
    if client is None:
        return None
    try:
        result = check_placement(client, cfg, agents, cfg.min_hosts)
    except PlacementViolation as exc:
        return CheckResult(PLACEMENT, False, str(exc), time.monotonic() - started)
    spread = ", ".join(f"{p.agent} on {p.host}" for p in result.placements)
    return CheckResult(
        PLACEMENT, True, f"{len(result.hosts)} hosts: {spread}", time.monotonic() - started
    )


def verdict(env: EnvironmentConfig, results: list[CheckResult]) -> Verification:
    failed = [r for r in results if not r.passed]
    summary = ", ".join(f"{r.name}: {'ok' if r.passed else 'FAILED'}" for r in results)
    return Verification(
        environment=env.name, passed=len(results) - len(failed), failed=len(failed), summary=summary
    )


def results_rows(results: list[CheckResult]) -> list[dict[str, str | float]]:
    """One row per check, for the tests table a person reads."""
    return [
        {
            "check": r.name,
            "result": "passed" if r.passed else "FAILED",
            "detail": r.detail,
            "seconds": round(r.duration_s, 2),
        }
        for r in results
    ]
