"""`labels gallery`: the images a search finds, as a contact sheet or a web page."""

from pathlib import Path
from typing import Annotated

import typer

from .context import state
from .options import SearchFilters, search_options

MAX_LIMIT = 500


@search_options
def gallery_cmd(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(
        metavar="QUERY", help="What to find, as for `labels search` (cat, dog, a label, a tag).")],
    output: Annotated[Path, typer.Option(
        "-o", "--output", dir_okay=False, metavar="FILE",
        help="File to write; its suffix picks the format: .png or .jpg (one image) "
             "or .html (a self-contained page that works offline).")],
    limit: Annotated[int, typer.Option(
        "--limit", min=1, max=MAX_LIMIT, metavar="N",
        help="At most N images (the best scores first). When more match, the "
             "sheet shows the first N and says so on the sheet and on stderr; there "
             "are no further pages.")] = 60,
    columns: Annotated[int, typer.Option(
        "--columns", min=1, max=20, metavar="N", help="Images per row of a .png/.jpg sheet.")] = 5,
    *, filters: SearchFilters,
) -> None:
    """Write a contact sheet of the images a search finds: thumbnails in a grid,
    each with its file name, top-3 labels with scores, and tags.

    Files that are gone or unreadable get a placeholder tile with the reason."""
    # Here, not at the top: Pillow and numpy load only when a sheet is drawn,
    # so `labels search` and the other commands do not pay for them.
    from labelsd.serve import gallery, gallery_sheet, query

    try:
        kind = gallery.output_kind(output)
    except gallery.GalleryError as err:
        raise typer.BadParameter(str(err), param_hint="-o") from None
    # One more than asked, to know whether the results were cut.
    st = state(ctx)
    result = query.find(st.reader(), text, limit=limit + 1, **filters.as_kwargs(st.settings))
    found = result.records
    if hid := filters.floor_note(result):
        typer.echo(hid, err=True)
    note = None
    if len(found) > limit:
        found = found[:limit]
        note = (f"more than {limit} images match; showing the best {limit} "
                f"(raise --limit, up to {MAX_LIMIT}, or narrow the search)")
    elif not found:
        note = f"nothing matches {text!r}"
    title = f"labels gallery: {text}"
    if kind == "html":
        count = gallery.render_html(found, output, title=title, note=note)
        unreadable = None
    else:
        result = gallery_sheet.render_sheet(found, output, columns=columns, title=title, note=note)
        count, unreadable = result.count, len(result.placeholders)
    if note:
        typer.echo(f"labels: {note}", err=True)
    from labelsd.paths import shown

    typer.echo(f"wrote {count} image(s) to {shown(str(output))}"
               + (f" ({unreadable} shown as placeholders)" if unreadable else ""), err=True)


def register(app: typer.Typer) -> None:
    app.command("gallery")(gallery_cmd)
