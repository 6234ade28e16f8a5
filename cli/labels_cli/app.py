"""The `labels` command: global options, one error boundary, command registration.

Commands live in small modules (`query_cmds`, ...) that add themselves to `app`;
each opens the store, calls one `labelsd` function and renders the result.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from labelsd.config import Settings, load_settings
from labelsd.errors import LabelsError

log = logging.getLogger("labels")


class LabelsGroup(TyperGroup):
    """The single error boundary: a `LabelsError` anywhere below becomes one line
    on stderr and exit 1; the traceback is shown only with --debug."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except LabelsError as err:
            state = ctx.find_object(CliState)
            if state is not None and state.debug:
                log.exception("labels failed")
            typer.echo(f"labels: error: {err}", err=True)
            raise typer.Exit(1) from None
        except PermissionError as err:
            # One the store did not foresee (a config file under another user's
            # home, ...): still one line, naming the group to join when there is one.
            from labelsd.store.access import denied_advice

            state = ctx.find_object(CliState)
            if state is not None and state.debug:
                log.exception("labels failed")
            line = denied_advice(err.filename, "the file") if err.filename else str(err)
            typer.echo(f"labels: error: {line}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=LabelsGroup,
    help="Query and tag the image labels that labelsd stores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class CliState:
    db: str | None = None
    config: str | None = None
    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)
    _store: object | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, db=self.db)
        return self._settings

    def store(self):
        """The store named by the settings, opened once per command."""
        if self._store is None:
            from labelsd.store.engine import open_store

            self._store = open_store(self.settings.db)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


@app.callback()
def _global_options(
    ctx: typer.Context,
    db: Annotated[Optional[str], typer.Option(
        "--db", help="Database: a SQLite file path or an SQLAlchemy URL "
                     "(postgresql+psycopg://...). Default: the service's database.")] = None,
    config: Annotated[Optional[str], typer.Option(
        "--config", help="TOML config file (default: $LABELS_CONFIG, "
                         "~/.config/labels/config.toml, /etc/labels/config.toml).")] = None,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show tracebacks and debug logging.")] = False,
) -> None:
    """Query and tag the image labels that labelsd stores."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="labels: %(levelname)s: %(message)s")
    state = CliState(db=db, config=config, debug=debug)
    ctx.obj = state
    ctx.call_on_close(state.close)


def state(ctx: typer.Context) -> CliState:
    return ctx.find_object(CliState)


# Command modules register themselves on `app` when imported.
from . import (
    db_cmds,  # noqa: E402,F401  (labels db copy)
    gallery_cmd,  # noqa: E402,F401
    query_cmds,  # noqa: E402,F401
    scan_cmd,  # noqa: E402,F401
    xmp_cmds,  # noqa: E402,F401  (labels xmp write)
)
from .model_cmds import model_app  # noqa: E402

app.add_typer(model_app, name="model")


def main() -> None:
    """Entry point of the `labels` console script."""
    try:
        app()
    except BrokenPipeError:
        # `labels search cat | head`: exit quietly, as shell tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except OSError as err:
        if err.errno == errno.EPIPE:
            sys.exit(0)
        raise


if __name__ == "__main__":
    main()
