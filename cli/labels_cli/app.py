"""The `labels` command: global options, one error boundary, command registration.

Commands live in small modules that each expose `register(app)` (as
sqlite-utils' plugins do with `register_commands`); this module calls them, and
they import nothing back from here. Each command opens the store (or, when it
only reads, a read-only view), calls one `labelsd` function and renders.
"""

import atexit
import errno
import functools
import gc
import inspect
import logging
import os
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from labelsd import __version__
from labelsd.errors import LabelsError
from labelsd.journal import LineFormatter
from labelsd.paths import one_line

from . import (
    change_cmds,
    db_cmds,
    gallery_cmd,
    judge_cmds,
    model_cmds,
    query_cmds,
    scan_cmd,
    serve_cmd,
    similar_cmds,
    xmp_cmds,
)
from .context import CliState, state  # noqa: F401  (state: for modules written before context.py)

log = logging.getLogger("labels")

COMMAND_MODULES = (query_cmds, change_cmds, judge_cmds, scan_cmd, gallery_cmd, xmp_cmds, db_cmds,
                   model_cmds, similar_cmds, serve_cmd)


class LabelsGroup(TyperGroup):
    """The single error boundary: a `LabelsError` anywhere below becomes one line
    on stderr and exit 1; the traceback is shown only with --debug. A reader
    that closed the pipe (`labels list | head -1`) is normal: exit 0, quietly.
    Every message is one line, whatever a name in it holds (labelsd.paths.one_line)."""

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        _plain_arguments(command)
        return command

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except typer.BadParameter as err:  # Click prints it: a path named in it stays one line
            err.message = one_line(err.message)
            raise
        except BrokenPipeError:
            _quiet_pipe()
        except LabelsError as err:  # exit 1, or the status the error names (75: try again later)
            _one_line(ctx, str(err), getattr(err, "exit_status", 1))
        except PermissionError as err:
            # One the store did not foresee (a config file under another user's
            # home, ...): still one line, naming the group to join when there is one.
            from labelsd.store.access import denied_advice

            _one_line(ctx, denied_advice(err.filename, "the file") if err.filename else str(err))
        except OSError as err:
            if err.errno != errno.EPIPE:
                raise
            _quiet_pipe()


def _one_line(ctx: typer.Context, message: str, status: int = 1):
    current = ctx.find_object(CliState)
    if current is not None and current.debug:
        log.exception("labels failed")
    typer.echo(f"labels: error: {one_line(message)}", err=True)
    raise typer.Exit(status) from None


def _quiet_pipe():
    # The reader left, as it may. Exit 0 quietly, as shell tools do, and keep
    # Python from complaining when it flushes stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(0)


def _plain_arguments(command) -> None:
    """Plain argument help for a command and, in a group (`xmp`, `db`), each of its commands."""
    for param in getattr(command, "params", ()):
        if param.param_type_name == "argument":
            _plain_argument(param)
    for sub in getattr(command, "commands", {}).values():
        _plain_arguments(sub)


def _plain_argument(param) -> None:
    """Help that shows what an argument is (QUERY, PATH... [TAG]...) the way
    git and click do, not Typer's `{QUERY}` and Python types (`<list[str]>`)."""
    shown = param.metavar or param.name.upper()
    repeated = param.nargs != 1 and not shown.endswith("...")
    usage = shown + ("..." if repeated else "")
    in_usage = usage if param.required else f"[{usage}]"
    # typer 0.29 asks these three; typer 0.27/0.28 (no pydantic) ask make_metavar.
    param.display_type_rich = lambda ctx: None
    param._usage_display_name = lambda: in_usage
    param._rich_display_name = lambda: usage
    param.make_metavar = lambda ctx=None, *, usage=False: in_usage if usage else shown


app = typer.Typer(
    cls=LabelsGroup,
    help="Query and tag the image labels that labelsd stores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"labels (labelsd) {__version__}")
        raise typer.Exit()


DB_HELP = ("Database: a SQLite file path or an SQLAlchemy URL "
           "(postgresql+psycopg://...). Default: the service's database.")
CONFIG_HELP = ("TOML config file (default: $LABELS_CONFIG, "
               "~/.config/labels/config.toml, /etc/labels/config.toml).")


@app.callback()
def _global_options(
    ctx: typer.Context,
    db: Annotated[Optional[str], typer.Option("--db", metavar="PATH|URL", help=DB_HELP)] = None,
    config: Annotated[Optional[str], typer.Option("--config", metavar="FILE", help=CONFIG_HELP)] = None,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show tracebacks and debug logging.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Query and tag the image labels that labelsd stores."""
    handler = logging.StreamHandler()
    handler.setFormatter(LineFormatter("labels: %(levelname)s: %(message)s"))  # one line a record
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
    ctx.obj = CliState(db=db, config=config, debug=debug)
    ctx.call_on_close(ctx.obj.close)


def _global_after_the_command(ctx: typer.Context, param: typer.CallbackParam, value):
    """`labels search cat --db X` as `labels --db X search cat`; the same option
    given with two values, before and after the command, is a usage error."""
    if value is None:
        return
    current = ctx.find_object(CliState)
    name = param.name.removeprefix("global_")
    before = getattr(current, name)
    if before is not None and before != value:
        raise typer.BadParameter(f"given twice: {before!r} before the command, {value!r} after it")
    setattr(current, name, value)
    current._settings = None  # read again with this one


# The global options every command also takes after its name: (option, metavar, help).
GLOBAL_AFTER_OPTIONS = (("--db", "PATH|URL", DB_HELP), ("--config", "FILE", CONFIG_HELP))
GLOBAL_AFTER = [
    inspect.Parameter(f"global_{option[2:]}", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Annotated[Optional[str], typer.Option(
                          option, metavar=metavar, help=text, expose_value=False,
                          callback=_global_after_the_command)])
    for option, metavar, text in GLOBAL_AFTER_OPTIONS]


def _accept_global_options(group: typer.Typer) -> None:
    """Every command, in sub-groups too (`xmp write`, `db copy`), takes --db and
    --config after its name as well as before it: people add them at the end."""
    for info in group.registered_commands:
        command = info.callback
        params = list(inspect.signature(command, eval_str=True).parameters.values())
        keyword = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        others = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        info.callback = _taking(command, inspect.Signature(others + keyword + GLOBAL_AFTER))
    for sub in group.registered_groups:
        _accept_global_options(sub.typer_instance)


def _taking(command, signature: inspect.Signature):
    @functools.wraps(command)
    def with_global_options(*args, **kwargs):
        for param in GLOBAL_AFTER:  # set on the state by their callback already
            kwargs.pop(param.name, None)
        return command(*args, **kwargs)

    with_global_options.__signature__ = signature
    return with_global_options


def help_cmd(
    ctx: typer.Context,
    command: Annotated[Optional[list[str]], typer.Argument(
        metavar="COMMAND", help="A command (search; xmp write): show its help instead.")] = None,
) -> None:
    """Show this help, or a command's (labels help search is labels search --help)."""
    group = ctx.parent
    shown, shown_ctx = group.command, group
    for name in command or []:
        found = shown.get_command(shown_ctx, name) if hasattr(shown, "get_command") else None
        if found is None:
            known = ", ".join(sorted(getattr(shown, "commands", {}))) or "none"
            raise typer.BadParameter(f"no command {name!r} (commands: {known})", param_hint="COMMAND")
        shown, shown_ctx = found, type(ctx)(found, info_name=name, parent=shown_ctx)
    typer.echo(shown.get_help(shown_ctx))


for module in COMMAND_MODULES:
    module.register(app)
app.command("help")(help_cmd)
_accept_global_options(app)


def main() -> None:
    """Entry point of the `labels` console script. The program is `labels` however
    it was started (`python -m`, a venv's script): usage lines and the shell
    completion variable (_LABELS_COMPLETE) use that name."""
    # Registered first, so it runs last of the exit handlers: the collections Python
    # runs while it shuts down walk every object a query left behind (the taxonomy's
    # indexes, the records) and were ~15% of `labels search cat --json` (35 of
    # 230 ms CPU). The process is ending, so skip them. Nothing relies on the
    # collector at exit: the store and the reader close with the command's context.
    atexit.register(gc.freeze)
    app(prog_name="labels")


if __name__ == "__main__":
    main()
