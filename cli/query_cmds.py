"""Commands that read or change records: list, show, retry."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from labelsd import queue
from labelsd.records import STATUSES
from labelsd.store import canonical_path

from .app import app, state
from .render import CsvOpt, JsonOpt, PathsOpt, choose_format, render_records


def _check_status(value: Optional[str]) -> Optional[str]:
    if value is not None and value not in STATUSES:
        raise typer.BadParameter(f"must be one of {', '.join(STATUSES)}")
    return value


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    status: Annotated[Optional[str], typer.Option(
        "--status", help="Only images in this status: pending, done, failed or missing.",
        callback=_check_status)] = None,
    as_json: JsonOpt = False, as_csv: CsvOpt = False, as_paths: PathsOpt = False,
) -> None:
    """List tracked images (optionally of one status)."""
    fmt = choose_format(as_json, as_csv, as_paths)
    render_records(state(ctx).store().records(status=status), fmt)


@app.command()
def show(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="An image file path.")],
    as_json: JsonOpt = False,
) -> None:
    """Show one image: its status, labels and tags (exit 1 if untracked)."""
    from labelsd.nodes import watched_roots
    from labelsd.paths import ignore_reason

    st = state(ctx)
    store = st.store()
    record = store.record(path)
    fmt = choose_format(as_json)
    if record is not None:
        if fmt.value == "json":
            render_records([record], fmt, single=True)
        else:
            _show_text(record)
        return
    full = canonical_path(path)
    roots = list(dict.fromkeys([canonical_path(r) for r in st.settings.watch]
                               + watched_roots(store)))
    reason = ignore_reason(full, roots) or "not seen by labelsd yet"
    if as_json:
        typer.echo(json.dumps({"path": full, "status": "untracked", "reason": reason}))
    else:
        typer.echo(f"{full}: untracked ({reason})")
    raise typer.Exit(1)


def _show_text(record) -> None:
    typer.echo(record.path)
    typer.echo(f"  status:  {record.status}" + (f" ({record.error})" if record.error else ""))
    if record.width:
        typer.echo(f"  size:    {record.width}x{record.height}")
    for p in record.labels:
        typer.echo(f"  {p.rank}. {p.label} ({p.score:.1%})  [{p.wnid}, class {p.class_index}]")
    if record.tags:
        typer.echo(f"  tags:    {', '.join(record.tags)}")


@app.command()
def retry(ctx: typer.Context) -> None:
    """Queue failed images again (the running service picks them up)."""
    count = queue.retry_failed(state(ctx).store())
    typer.echo(f"queued {count} failed image(s) again")
