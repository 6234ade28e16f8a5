"""Commands that read or change records: search, list, show, tag, untag, tags,
stats, status, export, retry. Each opens the store, calls one `labelsd`
function and renders the result."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from labelsd.errors import LabelsError
from labelsd.records import STATUSES
from labelsd.serve import query
from labelsd.store import tags as tagging
from labelsd.store import workqueue
from labelsd.store.engine import canonical_path

from .app import app, state
from .render import CsvOpt, Format, JsonOpt, PathsOpt, choose_format, render_json, render_records
from .xmp_cmds import CameraOpt, SinceOpt, UntilOpt, refresh_after_tagging, show_photo_meta


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
    from labelsd.paths import canonical_root, ignore_reason
    from labelsd.store.nodes import watched_roots

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
    roots = list(dict.fromkeys([canonical_root(r) for r in st.settings.watch]
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
    show_photo_meta(record)


@app.command()
def retry(ctx: typer.Context) -> None:
    """Queue failed images again (the running service picks them up)."""
    count = workqueue.retry_failed(state(ctx).store())
    typer.echo(f"queued {count} failed image(s) again")


@app.command()
def search(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(
        metavar="QUERY", help="What to find: a word such as cat, dog, vehicle, a label "
                              "such as 'golden retriever', or one of your tags.")],
    min_score: Annotated[Optional[float], typer.Option(
        "--min-score", min=0.0, max=1.0,
        help="Only images whose matching label scored at least this (0..1).")] = None,
    exact: Annotated[bool, typer.Option(
        "--exact", help="Match class names exactly; do not include the classes below "
                        "the query in WordNet (cat -> tabby, Persian cat ...).")] = False,
    tag: Annotated[Optional[list[str]], typer.Option(
        "--tag", metavar="T", help="Only images carrying this tag (repeat: all of them).")] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", min=1, help="At most this many images.")] = None,
    include_missing: Annotated[bool, typer.Option(
        "--include-missing", help="Also list images whose file is gone.")] = False,
    since: SinceOpt = None, until: UntilOpt = None, camera: CameraOpt = None,
    as_json: JsonOpt = False, as_csv: CsvOpt = False, as_paths: PathsOpt = False,
) -> None:
    """Find images by what they show (WordNet-aware: 'cat' finds every cat) or by tag.

    Results rank by the matching label's score; images found only by a tag
    come after the label matches."""
    fmt = choose_format(as_json, as_csv, as_paths)
    found = query.search(state(ctx).store(), text, exact=exact, min_score=min_score,
                         tags=tag or (), limit=limit, include_missing=include_missing,
                         since=since, until=until, camera=camera)
    render_records(found, fmt)


def _clean_tags(values: list[str]) -> list[str]:
    try:
        return [tagging.clean_tag(v) for v in values]
    except tagging.InvalidTag as err:
        raise typer.BadParameter(str(err), param_hint="TAG") from None


TagsArg = Annotated[list[str], typer.Argument(
    metavar="TAG", help="One or more tags (free text; quote tags with spaces).")]


@app.command()
def tag(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="An image file the service tracks.")],
    tags: TagsArg,
) -> None:
    """Tag an image. Tags belong to its content: they follow renames and apply to copies."""
    now = tagging.add_tags(state(ctx).store(), path, _clean_tags(tags))
    refresh_after_tagging(state(ctx), path, lift=tags)  # with xmp = "sidecar"
    typer.echo(f"{canonical_path(path)}: {', '.join(now)}")


@app.command()
def untag(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="An image file the service tracks.")],
    tags: TagsArg,
) -> None:
    """Remove tags from an image (case-insensitive; tags it lacks are ignored)."""
    left = tagging.remove_tags(state(ctx).store(), path, _clean_tags(tags))
    refresh_after_tagging(state(ctx), path)  # with xmp = "sidecar"
    typer.echo(f"{canonical_path(path)}: {', '.join(left) if left else '(no tags)'}")


@app.command("tags")
def tags_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List every tag with how many images carry it."""
    counts = tagging.tag_counts(state(ctx).store())
    if as_json:
        render_json([c.to_dict() for c in counts])
        return
    if not counts:
        typer.echo("no tags")
    for c in counts:
        typer.echo(f"{c.images:>7}  {c.tag}" + (f"  (imported on {c.imported})" if c.imported else ""))


@app.command()
def stats(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Counts by status, distinct contents, tags, and the most frequent labels."""
    result = query.stats(state(ctx).store())
    if as_json:
        render_json(result.to_dict())
        return
    typer.echo(f"images:   {result.images}  (" + ", ".join(
        f"{status} {n}" for status, n in result.counts.items()) + ")")
    typer.echo(f"contents: {result.contents}")
    typer.echo(f"tags:     {result.tags} on {result.tagged_contents} content(s)")
    if result.top_labels:
        typer.echo("top labels:")
        for label, n in result.top_labels:
            typer.echo(f"{n:>9}  {label}")


@app.command()
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Whether the service is running, what it watches, and the queue."""
    result = query.service_status(state(ctx).store())
    if as_json:
        render_json(result)
        return
    if not result["nodes"]:
        typer.echo("no labelsd service has used this database")
    for n in result["nodes"]:
        age = "never" if n["heartbeat_age_s"] is None else f"{n['heartbeat_age_s']:.1f}s ago"
        typer.echo(f"{'running' if n['alive'] else 'stopped'}  {n['host']} pid {n['pid']}  "
                   f"{n['model'] or '-'} on {n['device'] or '-'}  heartbeat {age}  "
                   f"done {n['done']} failed {n['failed']}  "
                   f"watching {', '.join(n['watching']) or '-'}")
    typer.echo(f"{'running' if result['running'] else 'not running'}: queued "
               f"{result['queued']}, done {result['done']}, failed {result['failed']}, "
               f"missing {result['missing']}")


class ExportFormat(str, Enum):
    json = "json"
    csv = "csv"


@app.command()
def export(
    ctx: typer.Context,
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", help="json (a list of image records) or csv.")] = ExportFormat.json,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Write to this file (replaced atomically) instead of stdout.",
        dir_okay=False)] = None,
) -> None:
    """Export every image record (streamed: a large library never sits in memory)."""
    records = state(ctx).store().records()
    chosen = Format(fmt.value)
    if output is None:
        render_records(records, chosen)
        return
    try:
        with query.atomic_output(output) as out:
            count = render_records(records, chosen, out)
    except OSError as err:
        raise LabelsError(f"cannot write {output}: {err.strerror or err}; "
                          "check that its folder exists and is writable") from err
    typer.echo(f"exported {count} image(s) to {output}", err=True)
