"""`conveyor verify DIGEST`: check a release's evidence offline, signatures and bindings.

Offline means no Prefect server: the evidence comes from the registry, the trust from
the pipeline file (the approvers' keys, reviewed in git), and the checks from ssh-keygen.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from conveyor.approvals.verify import ItemCheck, check_approvals
from conveyor.cli.pipeline_cmds import DEFAULT_PIPELINE, PipelineOpt, connections
from conveyor.config import load_pipeline
from conveyor.evidence import Evidence, read_evidence
from conveyor.release import DIGEST_RE

console = Console()
err = Console(stderr=True)


def _status(item: Evidence, check: ItemCheck | None) -> str:
    if check is None and item.kind == "source":
        return f"recorded ({len(item.payload.get('commits') or [])} commits)"
    if check is None:
        return "passed" if item.passed else "did not pass"
    if check.problems:
        return "INVALID"
    if check.decision != "approve":
        return f"{check.decision} (verified)" if check.signed else check.decision
    return "verified" if check.signed else "approved, not verified (typed identity)"


def _rows(items: list[Evidence], checks: dict[str, ItemCheck]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        check = checks.get(item.digest)
        rows.append(
            {
                "kind": item.kind,
                "environment": item.environment,
                "created": item.created.isoformat(),
                "artifact": item.digest,
                "status": _status(item, check),
                "ok": check.ok if check else item.passed or item.kind == "source",
                "details": check.lines if check else [],
                "problems": check.problems if check else [],
            }
        )
    return rows


def _print(digest: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"evidence of {digest}")
    for col in ("kind", "environment", "created", "status"):
        table.add_column(col, overflow="fold")
    for r in rows:
        style = "green" if r["ok"] else "red"
        table.add_row(
            r["kind"], r["environment"] or "-", r["created"][:19], f"[{style}]{r['status']}[/]"
        )
    console.print(table)
    for r in rows:
        if r["details"] or r["problems"]:
            console.print(f"[bold]{r['kind']} {r['environment'] or ''}[/] ({r['artifact'][:19]})")
            for line in r["details"]:
                console.print(f"  {line}", highlight=False)
            for problem in r["problems"]:
                console.print(f"  [red]✗ {problem}[/]", highlight=False)


def verify(
    digest: Annotated[str, typer.Argument(help="the release's image digest (sha256:…)")],
    pipeline: PipelineOpt = DEFAULT_PIPELINE,
    env: Annotated[
        str | None, typer.Option("--env", help="also require a verified approval for it")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Check every evidence record of a digest: who approved what, when, and whether it verifies."""
    if not DIGEST_RE.match(digest):
        err.print(f"[red]not a sha256 digest:[/] {digest!r}")
        raise typer.Exit(2)
    config = load_pipeline(pipeline)
    configs = {e.name: e.approval for e in config.environments if e.approval is not None}
    if env is not None:
        config.environment(env)
    with connections(config) as opened:
        items = read_evidence(opened.registry(), config.registry.repository, digest)
    checks = {c.evidence.digest: c for c in check_approvals(items, digest, configs)}
    rows = _rows(items, checks)
    missing = _missing_approval(env, list(checks.values()))
    if as_json:
        print(json.dumps({"digest": digest, "evidence": rows, "problems": missing}, indent=2))
    else:
        _print(digest, rows)
        for problem in missing:
            err.print(f"[red]✗ {problem}[/]", highlight=False)
    if missing or any(not c.ok for c in checks.values()):
        raise typer.Exit(1)
    if not as_json:
        console.print(f"[green]the evidence of {digest} verifies[/]")


def _missing_approval(env: str | None, checks: list[ItemCheck]) -> list[str]:
    if env is None:
        return []
    mine = [c for c in checks if c.environment == env]
    if not mine:
        return [f"no approval evidence for {env}"]
    if mine[-1].decision != "approve":
        return [f"the latest decision for {env} is {mine[-1].decision}"]
    return []
