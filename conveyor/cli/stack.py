"""``conveyor up``, ``conveyor down``, ``conveyor status`` and ``conveyor env``."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from conveyor.cli.errors import boundary
from conveyor.cli.prefect_setup import prepare_server
from conveyor.localstack.stack import SERVICES, LocalStack

app = typer.Typer(help="The local stack: Docker Engine, registry, Prefect server.")
out = Console()
err = Console(stderr=True)

HomeOpt = Annotated[
    Path,
    typer.Option("--home", envvar="CONVEYOR_HOME", help="state and logs folder of the stack"),
]
RegistryPortOpt = Annotated[
    int | None,
    typer.Option("--registry-port", envvar="CONVEYOR_REGISTRY_PORT", help="default 5000"),
]
PrefectPortOpt = Annotated[
    int | None,
    typer.Option("--prefect-port", envvar="CONVEYOR_PREFECT_PORT", help="default 4200"),
]
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="docker, registry, prefect, workers or clusters; repeat or comma-separate",
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="CONVEYOR_DB",
        help="the Prefect server's database: sqlite (default) or postgres (kept until down)",
    ),
]
PostgresPortOpt = Annotated[
    int | None,
    typer.Option("--postgres-port", envvar="CONVEYOR_POSTGRES_PORT", help="default 5433"),
]
DEFAULT_HOME = Path(".conveyor")


def _services(only: list[str] | None) -> list[str]:
    if not only:
        return list(SERVICES)
    return [s.strip() for item in only for s in item.split(",") if s.strip()]


@contextmanager
def _clear_errors() -> Iterator[None]:
    """A conveyor error ends the command with its one line, not a traceback."""
    with boundary():
        yield


def _table(stack: LocalStack) -> Table:
    table = Table(title=f"conveyor local stack ({stack.home})")
    table.add_column("service")
    table.add_column("state")
    table.add_column("started by")
    table.add_column("address", no_wrap=True)
    table.add_column("detail")
    for s in stack.status():
        state = "[green]running[/]" if s.running else "[red]stopped[/]"
        table.add_row(s.name, state, "conveyor" if s.ours else "-", s.url, s.detail)
    return table


def _exports(stack: LocalStack) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in stack.env().items())


@app.command()
def up(
    home: HomeOpt = DEFAULT_HOME,
    registry_port: RegistryPortOpt = None,
    prefect_port: PrefectPortOpt = None,
    only: OnlyOpt = None,
    db: DbOpt = None,
    postgres_port: PostgresPortOpt = None,
) -> None:
    """Start the local stack (a Prefect server, its workers and deployments included);
    what already runs is left as it is."""
    with _clear_errors():
        stack = LocalStack(
            home,
            registry_port,
            prefect_port,
            db=db,
            postgres_port=postgres_port,
            server_setup=prepare_server,
        )
        with out.status("starting the local stack") as spinner:
            lines = stack.up(_services(only), lambda m: spinner.update(f"starting {m}"))
        for line in lines:
            out.print(f"[green]✓[/] {line}", highlight=False)
        out.print(_table(stack))
        if "prefect" in _services(only):
            out.print("Point your shell at it with:", highlight=False)
            out.print(f'  eval "$(conveyor env --home {shlex.quote(str(stack.home))})"')
            out.print(f"  export PREFECT_API_URL={stack.prefect.api_url}", highlight=False)


@app.command()
def down(home: HomeOpt = DEFAULT_HOME, only: OnlyOpt = None) -> None:
    """Stop what `conveyor up` started; leave anything else running."""
    with _clear_errors():
        stack = LocalStack(home)
        with out.status("stopping the local stack") as spinner:
            lines = stack.down(_services(only), lambda m: spinner.update(f"stopping {m}"))
        for line in lines:
            out.print(f"[green]✓[/] {line}", highlight=False)


@app.command()
def status(home: HomeOpt = DEFAULT_HOME) -> None:
    """Show what of the local stack runs and where."""
    with _clear_errors():
        out.print(_table(LocalStack(home)))


@app.command()
def env(home: HomeOpt = DEFAULT_HOME) -> None:
    """Print the exports that point a shell at the stack: eval "$(conveyor env)"."""
    with _clear_errors():
        typer.echo(_exports(LocalStack(home)))
