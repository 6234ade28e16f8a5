"""`labels similar` and `labels duplicates`: photos that look alike, from the stored
embeddings. Each opens a read-only view of the library, calls one function of
`labelsd.serve.similar` / `labelsd.serve.duplicates`, and renders."""

from typing import Annotated, Optional

import typer

from labelsd.paths import shown

from .context import state
from .options import json_option, output_options
from .render import Format, render_json, render_records

IncludeMissingOpt = Annotated[bool, typer.Option(
    "--include-missing", help="Also list photos whose file is gone.")]


@output_options("a list of image records, each with its similarity (-1..1)", csv=False)
def similar(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(
        metavar="PATH", help="A photo in the library, or any image file (embedded now with "
                             "the configured model, which loads it).")],
    limit: Annotated[int, typer.Option("--limit", min=1, metavar="N", help="At most N photos.")] = 20,
    include_missing: IncludeMissingOpt = False,
    *, fmt: Format,
) -> None:
    """Photos that look like PATH, most similar first, with their similarity (-1..1).

    Exits 75 (try again later) when PATH is in the library but not embedded yet: the
    service embeds labelled photos when it is idle (`labels status` shows how far)."""
    from labelsd.serve.similar import similar as find_similar

    st = state(ctx)
    result = find_similar(st.reader(), path, limit=limit, include_missing=include_missing,
                          settings=st.settings)
    if fmt is not Format.table:
        render_records(result.found, fmt)
        return
    if not result.found:
        typer.echo("no similar photos")
    for rec in result.found:
        labels = ", ".join(p["label"] for p in rec["labels"][:1])
        typer.echo(f"{rec['similarity']:7.4f}  {shown(rec['path'])}" + (f"  ({labels})" if labels else ""))


def _check_threshold(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"must be between 0 and 1, not {value}")
    return value


def duplicates(
    ctx: typer.Context,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", metavar="T", callback=lambda v: v if v is None else _check_threshold(v),
        help="Lowest similarity (0..1) for two photos to count as one picture "
             "(default 0.86: resized, recompressed, cropped or re-exported copies).")] = None,
    as_json: json_option("a list of groups: count, exact, members (path, sha256, bytes, width, "
                         "height, similarity, exact_copy)") = False,
    include_missing: IncludeMissingOpt = False,
) -> None:
    """Groups of near-duplicate photos (a resized, recompressed, cropped or re-exported
    copy) and exact copies (the same bytes, marked =), largest group first."""
    from labelsd.model.registry import get_model
    from labelsd.serve.duplicates import DEFAULT_THRESHOLD, find_duplicates

    st = state(ctx)
    result = find_duplicates(st.reader(), threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                             include_missing=include_missing, family=get_model(st.settings.model).family)
    if result.space is None:
        typer.echo("labels: no photo is embedded yet: only exact copies are listed (the service "
                   "embeds labelled photos when it is idle)", err=True)
    if as_json:
        render_json(result.groups)
        return
    if not result.groups:
        typer.echo("no duplicates")
    for n, group in enumerate(result.groups, start=1):
        kind = "exact copies" if group["exact"] else "near-duplicates"
        typer.echo(f"group {n}: {group['count']} {kind}")
        for m in group["members"]:
            score = "      =" if m["exact_copy"] and m["similarity"] == 1.0 else (
                f"{m['similarity']:7.4f}" if m["similarity"] is not None else "      ?")
            size = f"{m['width']}x{m['height']}" if m["width"] else "?"
            typer.echo(f"  {score}  {shown(m['path'])}  ({size}, {m['bytes']:,} bytes)")


def register(app: typer.Typer) -> None:
    app.command("similar")(similar)
    app.command("duplicates")(duplicates)
