"""Commands that change the library: tag, untag, retry. Each is one short write
transaction per file through `labelsd.store` (imported when the command runs,
so the read-only commands never load SQLAlchemy)."""

import os
from typing import Annotated, Optional

import typer

from .context import state
from .xmp_cmds import refresh_after_tagging

ItemsArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="PATH... [TAG]...",
    help="Image files, then tags. Without -t the first is the file and the rest are "
         "tags (labels tag IMG.jpg vacation); with -t every one is a file.")]
TagOpt = Annotated[Optional[list[str]], typer.Option(
    "-t", "--tag", metavar="TAG", help="A tag (repeat for several); every PATH gets them all.")]
SearchOpt = Annotated[Optional[str], typer.Option(
    "--search", metavar="QUERY",
    help="Also every image `labels search QUERY` finds (as beets does with a query).")]


def _targets(ctx: typer.Context, items: list[str], tags: list[str], search: str | None,
             verb: str) -> tuple[list[str], list[str]]:
    """(paths, tags) from `PATH TAG...` or `PATH... -t TAG... [--search QUERY]`."""
    from labelsd.store import tags as tagging

    if not tags:
        if search is not None:
            raise typer.BadParameter("give the tags with -t when using --search", param_hint="-t")
        if len(items) < 2:
            raise typer.BadParameter(f"give a file and tags: labels {verb} PATH TAG..., "
                                     f"or labels {verb} PATH... -t TAG", param_hint="TAG")
        paths, tags = items[:1], items[1:]
        for text in tags:
            if os.path.exists(os.path.expanduser(text)):
                raise typer.BadParameter(
                    f"{text!r} is a file, not a tag; to {verb} several files give the tags "
                    f"with -t: labels {verb} {' '.join(items[:2])} ... -t TAG", param_hint="TAG")
    else:
        paths = list(items)
    if search is not None:
        from .render import search_noting_floor

        st = state(ctx)
        paths += [r["path"] for r in search_noting_floor(st.store(), search, st.settings).found]
    if not paths:
        raise typer.BadParameter("no image to change: give PATH..., or --search QUERY",
                                 param_hint="PATH")
    try:
        return list(dict.fromkeys(paths)), [tagging.clean_tag(t) for t in tags]
    except tagging.InvalidTag as err:
        raise typer.BadParameter(str(err), param_hint="TAG") from None


def _check_tracked(store, paths: list[str]) -> None:
    """Every path must have a read content before any is changed (all or nothing).
    A path that is neither tracked nor on disk is named as a file that does not exist."""
    from labelsd.errors import NotTracked
    from labelsd.paths import canonical_path

    with store.read() as session:
        for path in paths:
            try:
                store.require_content(session, path)
            except NotTracked:
                if not os.path.lexists(path):
                    raise NotTracked(f"{canonical_path(path)}: no such file") from None
                raise


def tag(ctx: typer.Context, items: ItemsArg = None, tags: TagOpt = None,
        search: SearchOpt = None) -> None:
    """Tag images: labels tag PATH TAG...  or  labels tag PATH... -t TAG [-t TAG].

    Tags belong to the content: they follow renames and apply to copies. A tag
    that names an existing file is refused (did you mean -t?)."""
    from labelsd.paths import canonical_path, one_line, shown
    from labelsd.store import tags as tagging

    paths, wanted = _targets(ctx, items or [], tags or [], search, "tag")
    store = state(ctx).store()
    _check_tracked(store, paths)
    for path in paths:
        now = tagging.add_tags(store, path, wanted)
        refresh_after_tagging(state(ctx), path, lift=wanted)  # with xmp = "sidecar"
        typer.echo(f"{shown(canonical_path(path))}: {one_line(', '.join(now))}")


def untag(ctx: typer.Context, items: ItemsArg = None, tags: TagOpt = None,
          search: SearchOpt = None) -> None:
    """Remove tags: labels untag PATH TAG...  or  labels untag PATH... -t TAG.

    Tags are matched case-insensitively. A tag an image does not carry changes
    nothing and is said on stderr (exit 0, as tagging with a tag it has)."""
    from labelsd.paths import canonical_path, one_line, shown
    from labelsd.store import tags as tagging

    paths, unwanted = _targets(ctx, items or [], tags or [], search, "untag")
    store = state(ctx).store()
    _check_tracked(store, paths)
    for path in paths:
        left, absent = tagging.remove_tags(store, path, unwanted)
        refresh_after_tagging(state(ctx), path)  # with xmp = "sidecar"
        name = shown(canonical_path(path))
        for tag in absent:
            typer.echo(f"labels: {name} has no tag {one_line(repr(tag))}: nothing removed", err=True)
        typer.echo(f"{name}: {one_line(', '.join(left)) if left else '(no tags)'}")


def retry(ctx: typer.Context) -> None:
    """Queue failed images again (the running service picks them up)."""
    from labelsd.serve.status import service_running
    from labelsd.store import workqueue

    store = state(ctx).store()
    count = workqueue.retry_failed(store)
    typer.echo(f"queued {count} failed image(s) again")
    if count and not service_running(store):
        typer.echo("labels: no labelsd is running on this library: they wait in the queue, "
                   "and nothing happens until it runs", err=True)


def register(app: typer.Typer) -> None:
    app.command("tag")(tag)
    app.command("untag")(untag)
    app.command("retry")(retry)
