"""Commands that judge a photo's labels: reject (a wrong label: no reader shows it or
finds the photo by it, relabelling never brings it back), unreject, confirm (a right
one: it ranks first and outlives relabelling), unconfirm. Each is one call of
`labelsd.serve.judging.judge` (one transaction for every photo), then the sidecars
of the photos it changed when the config writes them."""

from typing import Annotated, Optional

import typer

from .change_cmds import SearchOpt
from .context import state
from .xmp_cmds import refresh_after_tagging

PathsArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="PATH...", help="Image files (labels belong to the content: copies change too).")]
LabelOpt = Annotated[str, typer.Option(
    "-l", "--label", metavar="LABEL",
    help="The label, as `labels show` prints it (case, spaces and underscores do not "
         "matter): tabby, 'golden retriever'.")]


def _judge(ctx: typer.Context, action: str, paths: list[str] | None, label: str,
           search: str | None) -> None:
    from labelsd.serve.judging import DONE, judge

    if not paths and search is None:
        raise typer.BadParameter("give PATH..., or --search QUERY", param_hint="PATH")
    st = state(ctx)
    result = judge(st.store(), action, label, paths or [], search=search,
                   min_score=st.settings.search_min_score)
    # a label taken back (unrejected) or confirmed leaves the sidecars' suppressed list
    refresh_after_tagging(st, result.paths,
                          lift=[result.label] if action in ("unreject", "confirm") else ())
    for path in result.paths:
        typer.echo(f"{path}: {result.label} {DONE[action]}")
    if result.skipped:
        typer.echo(f"labels: {result.skipped} photo(s) `labels search {search}` found left as they "
                   f"were (each lacks {result.label}, or it is {DONE[action]} already)", err=True)


def reject(ctx: typer.Context, paths: PathsArg = None, label: LabelOpt = ...,
           search: SearchOpt = None) -> None:
    """Reject a wrong label: labels reject PATH... -l LABEL [--search QUERY].

    The label leaves the photo everywhere (search, show, stats, exports, sidecars)
    and no relabelling brings it back; `labels unreject` (or `labels confirm`)
    takes it back."""
    _judge(ctx, "reject", paths, label, search)


def unreject(ctx: typer.Context, paths: PathsArg = None, label: LabelOpt = ...,
             search: SearchOpt = None) -> None:
    """Take a rejection back: labels unreject PATH... -l LABEL."""
    _judge(ctx, "unreject", paths, label, search)


def confirm(ctx: typer.Context, paths: PathsArg = None, label: LabelOpt = ...,
            search: SearchOpt = None) -> None:
    """Confirm a right label: labels confirm PATH... -l LABEL [--search QUERY].

    A confirmed label ranks its photo first in search and is kept when another
    model labels the photo again; confirming a rejected label brings it back."""
    _judge(ctx, "confirm", paths, label, search)


def unconfirm(ctx: typer.Context, paths: PathsArg = None, label: LabelOpt = ...,
              search: SearchOpt = None) -> None:
    """Take a confirmation back: labels unconfirm PATH... -l LABEL."""
    _judge(ctx, "unconfirm", paths, label, search)


def register(app: typer.Typer) -> None:
    for command in (reject, unreject, confirm, unconfirm):
        app.command(command.__name__)(command)
