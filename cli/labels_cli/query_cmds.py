"""Commands that only read: search, list, show, tags, stats, status, export.
Each opens a read-only view of the library (creating nothing), calls one
`labelsd.serve.query` function and renders the result."""

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from labelsd.errors import LabelsError, NotTracked
from labelsd.paths import one_line, shown
from labelsd.records import STATUSES
from labelsd.serve import query

from .context import state
from .options import (
    ExportFormat,
    SearchFilters,
    Status,
    choices,
    json_option,
    output_options,
    search_options,
)
from .render import Format, render_json, render_records, write_json_list
from .xmp_cmds import show_photo_meta

EXIT_NOT_RUNNING = 3  # as `systemctl status` for a stopped unit


@output_options()
def list_cmd(
    ctx: typer.Context,
    status: Annotated[Optional[Status], typer.Option(
        "--status", metavar=choices(STATUSES),
        help="Only images in this status: pending, done, failed or missing.")] = None,
    *, fmt: Format,
) -> None:
    """List tracked images (optionally of one status)."""
    render_records(state(ctx).reader().record_dicts(status=status), fmt)


def show(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="An image file path.")],
    as_json: json_option("one image record (an object, not a list)") = False,
) -> None:
    """Show one image: its status, labels and tags (exit 1 if untracked)."""
    from labelsd.paths import canonical_path, canonical_root, ignore_reason

    st = state(ctx)
    reader = st.reader()
    record = reader.record(path)
    if record is not None:
        if as_json:
            render_records([record], Format.json, single=True)
        else:
            _show_text(record)
        return
    full = canonical_path(path)
    if os.path.isdir(full):
        reason = "a folder, not an image"
        message = (f"{shown(full)} is a folder: labels show takes one image (labels list lists the "
                   "images labelsd tracks, labels search WORD finds them by what they show)")
    elif not os.path.lexists(full):
        reason = "no such file"
        message = f"{shown(full)}: no such file"
    else:
        roots = list(dict.fromkeys([canonical_root(r) for r in st.settings.watch]
                                   + query.watched_roots(reader)))
        reason = ignore_reason(full, roots) or "not seen by labelsd yet"
        message = f"{shown(full)}: untracked ({reason})"
    if as_json:  # the record a script parses, on stdout; the error on stderr, as always
        typer.echo(json.dumps({"path": full, "status": "untracked", "reason": reason},
                              ensure_ascii=False))
    raise NotTracked(message)


def _show_text(record) -> None:
    typer.echo(shown(record.path))
    typer.echo(f"  status:  {record.status}" + (f" ({one_line(record.error)})" if record.error else ""))
    if record.width:
        typer.echo(f"  size:    {record.width}x{record.height}")
    for p in record.labels:
        typer.echo(f"  {p.rank}. {p.label} ({p.score:.1%})  [{p.wnid}, class {p.class_index}]"
                   + ("  confirmed" if p.confirmed else ""))
    for r in record.rejected:  # apart: what the person took back (labels unreject)
        typer.echo(f"  rejected: {r.label}  [{r.wnid}, class {r.class_index}]  "
                   f"({r.source}, {r.rejected_at[:10]})")
    if record.tags:
        typer.echo(f"  tags:    {one_line(', '.join(record.tags))}")
    show_photo_meta(record)


@search_options
@output_options()
def search(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(
        metavar="QUERY", help="What to find: a word such as cat, dog, vehicle (plurals too), "
                              "a label such as 'golden retriever', or words of your tags.")],
    limit: Annotated[Optional[int], typer.Option(
        "--limit", min=1, metavar="N", help="At most N images.")] = None,
    *, fmt: Format, filters: SearchFilters,
) -> None:
    """Find images by what they show (WordNet-aware: 'cat' finds every cat) or by tag.

    Results rank by the matching label's score; images found only by a tag
    come after the label matches. Label matches below the config's
    search_min_score (10%) are left out, and stderr says how many; --min-score 0
    shows them. The table says which label or tag found each image. When the
    query names no class and no tag, stderr says so and suggests the nearest
    class names (the exit status stays 0)."""
    st = state(ctx)
    result = query.find(st.reader(), text, limit=limit, as_json=fmt is Format.json,
                        **filters.as_kwargs(st.settings))
    if result.texts is not None:
        write_json_list(result.texts)
    else:
        render_records(result.found, fmt, reason=result.reason)
    if note := filters.floor_note(result):
        typer.echo(note, err=True)
    if not result.classes and not result.tag_keys:
        hint = (f"; did you mean {', '.join(result.suggestions)}?" if result.suggestions else "")
        typer.echo(f"labels: no class or tag matches {text!r}{hint}", err=True)


def tags_cmd(ctx: typer.Context,
             as_json: json_option("a list of objects with tag, count (images), contents and imported") = False) -> None:
    """List every tag with how many images carry it."""
    counts = query.tag_counts(state(ctx).reader())
    if as_json:
        render_json(counts)
        return
    if not counts:
        typer.echo("no tags")
    for c in counts:
        typer.echo(f"{c['count']:>7}  {one_line(c['tag'])}"
                   + (f"  (imported on {c['imported']})" if c["imported"] else ""))


def stats(ctx: typer.Context,
          as_json: json_option("one object: counts, images, contents, tags, top_labels") = False
          ) -> None:
    """Counts by status, distinct contents, tags, and the most frequent labels."""
    result = query.stats(state(ctx).reader())
    if as_json:
        render_json(result.to_dict())
        return
    typer.echo(f"images:   {result.images}  (" + ", ".join(
        f"{status} {n}" for status, n in result.counts.items()) + ")")
    typer.echo(f"contents: {result.contents}  (distinct files; copies share one)")
    typer.echo(f"tags:     {result.tags} on {result.tagged_contents} content(s)")
    if result.top_labels:
        typer.echo("top labels (images whose first label it is):")
        for label, n in result.top_labels:
            typer.echo(f"{n:>9}  {label}")


def status(
    ctx: typer.Context,
    all_nodes: Annotated[bool, typer.Option(
        "--all", help="Also list services stopped more than a day ago.")] = False,
    as_json: json_option("one object: running, pid, model, device, runtime, precision, auto, watching, queued, "
                         "done, failed, missing, heartbeat_age_s, database, nodes, embeddings") = False,
) -> None:
    """Whether the service is running, what it watches, and the queue.

    Exits 3 when no service is running (as `systemctl status` does)."""
    result = query.service_status(state(ctx).reader(), all_nodes=all_nodes)
    if as_json:
        render_json(result)
    else:
        _status_text(result)
    if not result["running"]:
        raise typer.Exit(EXIT_NOT_RUNNING)


def _status_text(result: dict) -> None:
    typer.echo(f"database: {shown(result['database'])}")
    if not result["nodes"] and not result["nodes_hidden"]:
        typer.echo("no labelsd service has used this database")
    for n in result["nodes"]:
        age = "never" if n["heartbeat_age_s"] is None else _age(n["heartbeat_age_s"])
        typer.echo(f"{'running' if n['alive'] else 'stopped'}  {n['host']} pid {n['pid']}  "
                   f"{n['model'] or '-'} on {n['device'] or '-'}  heartbeat {age}  "
                   f"since it started: {n['done']} labeled, {n['failed']} failed  "
                   f"watching {', '.join(map(shown, n['watching'])) or '-'}")
        if n.get("auto"):
            typer.echo(f"  precision {n['precision']}: {one_line(n['auto']['why'])}")
    if result["nodes_hidden"]:
        typer.echo(f"({result['nodes_hidden']} service(s) stopped over a day ago not shown; "
                   "--all lists them)")
    embedded = result.get("embeddings")
    if embedded and embedded["total"]:
        typer.echo(f"embedded for `labels similar`: {embedded['done']} of {embedded['total']} labelled "
                   f"photo contents ({embedded['model'] or 'no model yet'})")
    typer.echo(f"{'running' if result['running'] else 'not running'}: in the library "
               f"{result['queued']} queued, {result['done']} done, {result['failed']} failed, "
               f"{result['missing']} missing")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago" if seconds < 172800 else f"{seconds / 86400:.0f} days ago"


def export(
    ctx: typer.Context,
    fmt: Annotated[Optional[ExportFormat], typer.Option(
        "--format", metavar="json|csv",
        help="json (a list of image records) or csv. Default: the suffix of -o "
             "(.csv is CSV), else json.")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", metavar="FILE", dir_okay=False,
        help="Write to FILE (replaced atomically) instead of stdout.")] = None,
) -> None:
    """Export every image record (streamed: a large library never sits in memory)."""
    chosen = Format(fmt) if fmt else _format_of(output)
    records = state(ctx).reader().record_dicts()
    if output is None:
        render_records(records, chosen)
        return
    try:
        with query.atomic_output(output) as out:
            count = render_records(records, chosen, out)
    except OSError as err:
        raise LabelsError(f"cannot write {shown(str(output))}: {err.strerror or err}; "
                          "check that its folder exists and is writable") from err
    typer.echo(f"exported {count} image(s) to {shown(str(output))} as {chosen.value}", err=True)


def _format_of(output: Optional[Path]) -> Format:
    """JSON or CSV from -o's suffix (no suffix, as /dev/stdout: JSON). Any other
    suffix (.xlsx, .txt) is refused, as `gallery -o x.gif` is, rather than filled
    with what it does not hold."""
    suffix = output.suffix.lower() if output is not None else ""
    if suffix in ("", ".json"):
        return Format.json
    if suffix == ".csv":
        return Format.csv
    raise typer.BadParameter(f"cannot tell the format of {str(output)!r}: name it .json or .csv "
                             "(or give --format json|csv)", param_hint="-o")


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("show")(show)
    app.command("list")(list_cmd)
    app.command("tags")(tags_cmd)
    app.command("stats")(stats)
    app.command("status")(status)
    app.command("export")(export)
