"""`conveyor preflight | plan | gc`: look at an environment or the registry without a flow run."""

from __future__ import annotations

import json
from typing import Annotated, Any, Protocol, runtime_checkable

import typer
from rich.console import Console
from rich.table import Table

from conveyor.cli.pipeline_cmds import DEFAULT_PIPELINE, PipelineOpt, connections
from conveyor.config import load_pipeline
from conveyor.connections import Connections
from conveyor.drivers.base import DeployedState
from conveyor.errors import NotFound
from conveyor.preflight import PreflightReport
from conveyor.release import Release

console = Console()
err = Console(stderr=True)
STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


def _report_table(reports: list[PreflightReport]) -> Table:
    table = Table(title="pre-flight")
    for col in ("source", "object", "check", "status", "detail"):
        table.add_column(col, overflow="fold")
    for r in reports:
        for c in r.checks:
            table.add_row(
                r.source, c.subject, c.name, f"[{STYLE[c.status]}]{c.status}[/]", c.detail
            )
    return table


def _release_for(opened: Connections, environment: str, digest: str | None) -> Release:
    """The release a deploy of ``environment`` would take: ``digest``, or what the
    environment before it passed (its tag), or for the first, the first's own tag."""
    from conveyor import source

    if digest is not None:
        return source.find_release(opened, digest)
    pipeline = opened.pipeline
    index = pipeline.environments.index(pipeline.environment(environment))
    tag = pipeline.environments[max(index - 1, 0)].tag
    try:
        return source.tagged_release(opened, tag)
    except NotFound:
        err.print(f"[red]no digest carries {tag} yet; pass --digest[/]")
        raise typer.Exit(2) from None


def preflight(
    environment: Annotated[str, typer.Argument(help="the environment to check")],
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    digest: Annotated[str | None, typer.Option(help="the release to check room for")] = None,
) -> None:
    """Run an environment's pre-flight checks now and show every result."""
    from conveyor.preflight.environment import environment_preflight

    config = load_pipeline(pipeline)
    env = config.environment(environment)
    with connections(config) as opened, console.status(f"asking the {environment} cluster"):
        release = _release_for(opened, environment, digest) if env.preflight.dcos else None
        reports = environment_preflight(opened, env, release)
    if not reports:
        console.print(f"{environment} has no pre-flight checks configured")
        return
    console.print(_report_table(reports))
    failed = sum(len(r.failures) for r in reports)
    if failed:
        err.print(f"[red]{failed} checks failed[/]")
        raise typer.Exit(1)


@runtime_checkable
class _MemberPlans(Protocol):
    """A driver of a release of several services that can plan each member apart."""

    def plan_members(self, release: Release) -> dict[str, str]: ...


def _member_rows(state: DeployedState, release: Release) -> list[dict[str, Any]]:
    """Per service: the digests its instances run now, the one it would run, the change."""
    rows = []
    for member in release.services:
        mine = [i for i in state.instances if i.member in (member.app, None)]
        running = sorted({i.digest for i in mine if i.digest})
        if not mine:
            change = "first deploy"
        elif running == [member.digest]:
            change = "none" if all(i.healthy for i in mine) else "restart (not healthy)"
        else:
            change = "update"
        rows.append(
            {
                "service": member.app,
                "running": running,
                "target": {"digest": member.digest, "version": member.version},
                "change": change,
            }
        )
    return rows


def _plan_json(
    environment: str, release: Release, state: DeployedState, text: str, driver: object
) -> str:
    rows = _member_rows(state, release)
    if isinstance(driver, _MemberPlans):
        sections = driver.plan_members(release)
        for row in rows:
            row["plan"] = sections.get(row["service"], "")
    elif not release.members:
        rows[0]["plan"] = text
    doc = {
        "environment": environment,
        "release": {"name": release.app, "version": release.version, "digest": release.digest},
        "running": {"digest": state.digest, "version": state.version},
        "members": rows,
        "plan": text,
    }
    return json.dumps(doc, indent=2)


def _member_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="members")
    for col in ("service", "running", "target", "change"):
        table.add_column(col, overflow="fold")
    for row in rows:
        running = ", ".join(d[7:19] for d in row["running"]) or "-"
        target = f"{row['target']['version']} ({row['target']['digest'][7:19]})"
        table.add_row(row["service"], running, target, row["change"])
    return table


def plan(
    environment: Annotated[str, typer.Argument(help="the environment to plan a deploy for")],
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    digest: Annotated[
        str | None, typer.Option(help="sha256:...; default: what the stage before passed")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print a JSON object, one entry per member")
    ] = False,
) -> None:
    """Show what a deploy would change in an environment, member by member; changes nothing."""
    config = load_pipeline(pipeline)
    env = config.environment(environment)
    with connections(config) as opened:
        release = _release_for(opened, environment, digest)
        driver = opened.driver(env)
        state = driver.status()
        text = driver.plan(release)
        if as_json:
            typer.echo(_plan_json(environment, release, state, text, driver))
            return
        if release.members:
            console.print(_member_table(_member_rows(state, release)))
        console.print(text, highlight=False, markup=False)


def _protected(opened: Connections) -> tuple[set[str], dict[str, set[str]]]:
    """What runs anywhere and what each environment would roll back to (for a
    ``services:`` file: release artifacts), and per member repository the image
    digests its instances run (a member can run off its release until the next deploy)."""
    pipeline = opened.pipeline
    repos = {s.name: pipeline.repository_of(s) for s in pipeline.members}
    keep: set[str] = set()
    running: dict[str, set[str]] = {}
    for env in pipeline.environments:
        state = opened.driver(env).status()
        keep |= {d for d in (state.digest, state.previous_digest) if d}
        for i in state.instances:
            if i.member in repos and i.digest:
                running.setdefault(repos[i.member], set()).add(i.digest)
    return keep, running


def gc(
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what would go; delete nothing")
    ] = False,
) -> None:
    """Delete old releases beyond the newest N; never one an environment runs or needs.

    For a ``services:`` file every member repository too: an image stays while a kept
    release lists it, whatever its age."""
    from conveyor import gc as housekeeping
    from conveyor.promotion import TagPolicy

    config = load_pipeline(pipeline)
    with connections(config) as opened:
        registry = opened.registry()
        keep, running = _protected(opened)
        policy = TagPolicy.from_config(config.registry)
        count = config.registry.keep_integration_ready
        if config.services:
            members = [config.repository_of(s) for s in config.members]
            todo: housekeeping.GcPlan | housekeeping.ReleaseGcPlan = housekeeping.plan_release_gc(
                registry, config.registry.repository, members,
                keep=count, protected=keep, running=running, policy=policy,
            )  # fmt: skip
        else:
            todo = housekeeping.plan_gc(
                registry, config.registry.repository, keep=count, protected=keep, policy=policy
            )
        for line in todo.lines():
            console.print(line, highlight=False)
        if dry_run or not todo.delete:
            return
        if isinstance(todo, housekeeping.ReleaseGcPlan):
            deleted = housekeeping.apply_release_gc(registry, todo)
        else:
            deleted = housekeeping.apply_gc(registry, todo)
    console.print(f"deleted {len(deleted)} releases")


def register(app: typer.Typer) -> None:
    for command in (preflight, plan, gc):
        app.command()(command)


__all__ = ["register"]
