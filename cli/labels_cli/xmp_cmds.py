"""`labels xmp write [QUERY]`, and the photo-metadata parts other commands share:
the `--since/--until/--camera` search options, the date/camera/GPS lines of
`labels show`, and refreshing a sidecar after `labels tag` / `untag` when the
config says `xmp = "sidecar"` (in the CLI's process: the service is not involved)."""

from typing import Annotated, Optional

import typer

from labelsd.errors import SidecarError
from labelsd.paths import one_line

from .context import state
from .params import score

xmp_app = typer.Typer(help="XMP sidecars: labels and tags as keywords other photo programs read.",
                      no_args_is_help=True, rich_markup_mode=None)


def _check_date(value: Optional[str]) -> Optional[str]:
    from labelsd.serve.query import taken_window

    if value is not None:
        try:
            taken_window(value, value)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
    return value


SinceOpt = Annotated[Optional[str], typer.Option(
    "--since", metavar="DATE", callback=_check_date,
    help="Only photos taken on or after this date (EXIF): YYYY, YYYY-MM or YYYY-MM-DD.")]
UntilOpt = Annotated[Optional[str], typer.Option(
    "--until", metavar="DATE", callback=_check_date,
    help="Only photos taken up to the end of this year, month or day (EXIF).")]
CameraOpt = Annotated[Optional[str], typer.Option(
    "--camera", metavar="NAME", help="Only photos from a camera whose make or model contains "
                                     "this (case-insensitive): iphone, canon, 'EOS R5'.")]


def show_photo_meta(record) -> None:
    """The `labels show` lines for when, with what and where a photo was taken."""
    if record.taken_at:
        typer.echo(f"  taken:   {record.taken_at.replace('T', ' ')}")
    if record.camera:
        typer.echo(f"  camera:  {one_line(record.camera)}")  # what the photo's EXIF says
    if record.gps_lat is not None and record.gps_lon is not None:
        typer.echo(f"  gps:     {record.gps_lat:.6f}, {record.gps_lon:.6f}")


def refresh_after_tagging(st, path: str | list[str], lift: list[str] | tuple = ()) -> None:
    """Rewrite the photos' sidecars after a tag change (or a label rejected or
    confirmed), when sidecars are on. A sidecar that cannot be written is a warning:
    the change itself is done."""
    if st.settings.xmp != "sidecar":
        return
    from labelsd.xmp.writer import refresh_after_tagging as refresh

    for message in refresh(st.store(), st.settings.xmp_min_score, path, lift):
        typer.echo(f"labels: warning: {one_line(message)}", err=True)


@xmp_app.command("write")
def write_cmd(
    ctx: typer.Context,
    text: Annotated[Optional[str], typer.Argument(
        metavar="QUERY", help="Only the photos this search finds (default: every labelled photo).")] = None,
    min_score: Annotated[Optional[float], typer.Option(
        "--min-score", parser=score, metavar="SCORE",
        help="Labels scoring at least SCORE (0.5 or 50%) go into sidecars (default: the "
             "config's xmp_min_score, 20%). QUERY finds photos as `labels search` does.")] = None,
) -> None:
    """Write or refresh NAME.EXT.xmp beside each labelled photo: its labels (also under
    'labelsd|' in the keyword hierarchy) and tags. Other programs' fields are kept."""
    from labelsd.xmp.writer import refresh_sidecars

    st = state(ctx)
    store = st.store()
    if text:
        from .render import search_noting_floor

        records = search_noting_floor(store, text, st.settings).records
    else:
        records = store.records(status="done")
    threshold = st.settings.xmp_min_score if min_score is None else min_score
    report = refresh_sidecars(records, threshold, store=store)
    for message in report.errors:
        typer.echo(f"labels: warning: {one_line(message)}", err=True)
    if report.errors and not (report.written or report.unchanged):
        raise SidecarError(f"no sidecar could be written ({len(report.errors)} error(s))")
    typer.echo(f"{report.written} sidecar(s) written, {report.unchanged} already up to date, "
               f"{report.skipped} photo(s) skipped (not labelled, nothing above the floor, missing, "
               "or read-only folder)"
               + (f"; {report.rejected} label(s) removed in another program now rejected"
                  if report.rejected else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(xmp_app, name="xmp")
