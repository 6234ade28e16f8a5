"""`labels db copy --to URL`: move a library to another database (e.g. SQLite to
PostgreSQL when one machine is no longer enough)."""

from typing import Annotated

import typer

from labelsd.paths import one_line

from .context import state
from .render import render_json

db_app = typer.Typer(help="Manage the database itself (copy a library to another one).",
                     no_args_is_help=True)


@db_app.command("copy")
def copy(
    ctx: typer.Context,
    to: Annotated[str, typer.Option(
        "--to", metavar="URL|PATH",
        help="Target database: an SQLAlchemy URL (postgresql+psycopg://user@host/labels) "
             "or a SQLite file path. Created/migrated to the current schema first.")],
    force: Annotated[bool, typer.Option(
        "--force", help="Merge into a target that already holds images. Rows the target "
                        "already has (same content, path, tag) are kept as they are, so "
                        "copying twice adds nothing the second time.")] = False,
    chunk: Annotated[int, typer.Option(
        "--chunk", min=1, metavar="N", help="Rows per transaction (memory stays bounded by this).")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Copy the library in --db (contents, paths, labels, tags, pending queue)
    into another database. Service nodes are not copied; stop the services
    first so nothing changes during the copy. Refuses a target that already
    holds images unless --force."""
    from labelsd.store.copy import copy_library
    from labelsd.store.engine import open_store

    source = state(ctx).store()
    with open_store(to) as target:
        counts = copy_library(source, target, chunk=chunk, merge=force)
    if as_json:
        render_json(counts)
    else:
        typer.echo("copied " + ", ".join(f"{n} {table}" for table, n in counts.items())
                   + f" into {one_line(target.where)}")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
