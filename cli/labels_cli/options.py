"""Options shared by several commands, declared once.

`search_options` adds the search filters (`--min-score`, `--exact`, `--tag`,
`--include-missing`, and the EXIF filters `--since`, `--until`, `--camera`
declared in xmp_cmds.py) to a command, which receives them as one
`SearchFilters` value named `filters`: `search` and `gallery` take the same
options from here. A new filter is one field of `SearchFilters` and one entry
of `SEARCH_OPTIONS`.

`output_options` adds the output flags of a command that prints image records
(`--json`, `--csv`, `--paths`, `-0/--null`), which receives the chosen `render.Format`
as `fmt`: a command that prints paths gets `-0/--null` with them, as sqlite-utils'
`output_options` gives every command the same flags.
"""

import functools
import inspect
from dataclasses import asdict, dataclass
from typing import Annotated, Literal, Optional

import typer

from labelsd.config import DEVICES, PRECISIONS
from labelsd.model.registry import model_names
from labelsd.records import STATUSES

from .params import score
from .render import Format, choose_format, floor_note
from .xmp_cmds import CameraOpt, SinceOpt, UntilOpt

# Options with fixed choices are Literal types: click validates them and the shell
# completes them (`labels list --status <TAB>`). A test walks every option.
Device = Literal[DEVICES]
Precision = Literal[PRECISIONS]
Model = Literal[model_names()]
Status = Literal[STATUSES]
ExportFormat = Literal["json", "csv"]


def choices(values: tuple[str, ...]) -> str:
    """The metavar that shows the choices: auto|cpu|gpu."""
    return "|".join(values)


DeviceOpt = Annotated[Optional[Device], typer.Option(
    "--device", metavar=choices(DEVICES), help="auto, cpu or gpu (default: the config's, else auto).")]
PrecisionOpt = Annotated[Optional[Precision], typer.Option(
    "--precision", metavar=choices(PRECISIONS),
    help="As the service's: auto, fp32, bf16 or int8 (default: the config's, else auto).")]
ModelOpt = Annotated[Optional[Model], typer.Option(
    "--model", metavar=choices(model_names()),
    help="inception_v3 or efficientnet_lite0 (several times faster; its weights are installed "
         "with labelsd); default: the config's, else inception_v3.")]


@dataclass(frozen=True)
class SearchFilters:
    """What narrows a search besides its words (keyword arguments of `query.find`)."""

    min_score: float | None = None
    exact: bool = False
    tags: tuple[str, ...] = ()
    include_missing: bool = False
    since: str | None = None
    until: str | None = None
    camera: str | None = None

    def as_kwargs(self, settings=None) -> dict:
        """Keyword arguments of `query.find`; with `settings`, a --min-score not given
        is the configured floor (`search_min_score`), as `labels search` applies it."""
        values = asdict(self)
        if values["min_score"] is None and settings is not None:
            values["min_score"] = settings.search_min_score
        return values

    def floor_note(self, result) -> str | None:
        """`floor_note` for a search run with these filters."""
        return floor_note(result, chosen=self.min_score is not None)


def _option(name: str, annotation, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


SEARCH_OPTIONS = [
    _option("min_score", Annotated[Optional[float], typer.Option(
        "--min-score", parser=score, metavar="SCORE",
        help="Only images whose matching label scored at least SCORE: 0.5 or 50% "
             "(default: the config's search_min_score, 10%; 0 shows every match). "
             "Images found by a tag are shown whatever the score.")], None),
    _option("exact", Annotated[bool, typer.Option(
        "--exact", help="Match class names exactly; do not include the classes below "
                        "the query in WordNet (cat -> tabby, Persian cat ...).")], False),
    _option("tags", Annotated[Optional[list[str]], typer.Option(
        "--tag", metavar="TAG",
        help="Only images carrying TAG (repeat: all of them).")], None),
    _option("include_missing", Annotated[bool, typer.Option(
        "--include-missing", help="Also find images whose file is gone.")], False),
    _option("since", SinceOpt, None),
    _option("until", UntilOpt, None),
    _option("camera", CameraOpt, None),
]


def _with_options(command, received: str, options: list[inspect.Parameter], make):
    """`command` with `options` added to its parameters; it receives `make(values)` as
    the keyword argument `received` instead."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
           if p.name != received]
    names = [p.name for p in options]

    @functools.wraps(command)
    def with_options(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in names}
        return command(*args, **{received: make(values)}, **kwargs)

    positional = [p for p in own if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
    with_options.__signature__ = inspect.Signature(positional + keyword + options)
    return with_options


def search_options(command):
    """Give `command` the shared search options; it receives them as `filters`."""
    def filters(values: dict) -> SearchFilters:
        return SearchFilters(**{**values, "tags": tuple(values["tags"] or ())})

    return _with_options(command, "filters", SEARCH_OPTIONS, filters)


def json_option(prints: str):
    """`--json`, with help saying what this command prints."""
    return Annotated[bool, typer.Option("--json", help=f"Print JSON: {prints}.")]


RECORDS = "a list of image records (path, status, labels, tags ...)"
CsvOpt = Annotated[bool, typer.Option("--csv", help="Print CSV, one row per image.")]
PathsOpt = Annotated[bool, typer.Option(
    "--paths", help="Print only the paths, one per line (a control character in a name, "
                    "a newline say, escaped: \\n; use -0 for the paths as they are).")]
NullOpt = Annotated[bool, typer.Option(
    "-0", "--null", help="Print only the paths, each as it is and ended by a NUL byte instead of "
                         "a newline (as find -print0; for xargs -0).")]


def output_options(prints: str = RECORDS, *, csv: bool = True):
    """Give a command that prints image records the shared output flags: --json (help
    saying it prints `prints`), --csv where `csv`, --paths and -0/--null. It receives the
    chosen `Format` as `fmt` (a usage error for two at once)."""
    options = [_option("as_json", json_option(prints), False)]
    options += [_option("as_csv", CsvOpt, False)] if csv else []
    options += [_option("as_paths", PathsOpt, False), _option("null", NullOpt, False)]

    def decorate(command):
        return _with_options(command, "fmt", options, lambda values: choose_format(**values))

    return decorate


__all__ = ["RECORDS", "CsvOpt", "Format", "NullOpt", "PathsOpt", "SearchFilters", "json_option",
           "output_options", "search_options"]
