"""`labels serve`: the library in a web browser. Starlette, Jinja2 and uvicorn
are imported when it runs, so no other command pays for them."""

from typing import Annotated

import typer

from .context import state


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDRESS",
        help="Address to listen on. Any but loopback (127.0.0.1, ::1) asks browsers for a "
             "token: serve_token in the config, or one printed at start.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, metavar="PORT", help="TCP port (0: any free one).")] = 8470,
    read_only: Annotated[bool, typer.Option(
        "--read-only", help="Show the library; hide and refuse every change (tags, retry).")] = False,
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="Ask for no token on any address (behind a proxy that "
                          "authenticates, on a trusted network).")] = False,
) -> None:
    """Browse, search and tag the library in a web browser (http://127.0.0.1:8470/).

    Runs until Ctrl-C or SIGTERM. Pages: search, each photo with its labels and
    tags, labels, tags, status; JSON at /api/search and /api/photo/<sha256>."""
    from labelsd.web.server import serve as serve_library
    from labelsd.web.site import ServeOptions

    serve_library(state(ctx).settings, ServeOptions(host=host, port=port, read_only=read_only,
                                                    no_auth=no_auth))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
