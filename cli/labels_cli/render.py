"""One render path for image records: a table for people, JSON, CSV or bare
paths for scripts. `search`, `list`, `show` and `export` all go through
`render_records`, which streams (a large export never sits in memory) and
renders from the JSON shape of a record (the dicts the record reads build).
Summaries that are not records (`stats`, `tags`, `status`) print their JSON
through `render_json`.

A file name is whatever its author typed, newlines and escape sequences included:
the table and `--paths` show it escaped (labelsd.paths.shown), one line per image,
so a name can neither add a line nor rewrite one; `-0/--null` prints each path as it
is, ended by a NUL byte (`find -print0`, for `xargs -0`); JSON and CSV quote it."""

from __future__ import annotations

import csv
import json
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator
from enum import Enum
from typing import Annotated, TextIO

import typer

from labelsd.paths import one_line, shown
from labelsd.records import ImageRecord
from labelsd.store import recordjson


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    paths = "paths"
    paths0 = "paths0"  # -0/--null: each path as it is, ended by a NUL byte


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (a list of image records).")]

CSV_COLUMNS = ["path", "sha256", "status", "error", "width", "height",
               "label1", "score1", "label2", "score2", "label3", "score3",
               "tags", "classified_at"]


def choose_format(as_json: bool = False, as_csv: bool = False, as_paths: bool = False,
                  null: bool = False) -> Format:
    if null and (as_json or as_csv):
        raise typer.BadParameter("-0/--null prints paths (it goes with --paths), not --json or --csv")
    chosen = [f for f, on in ((Format.json, as_json), (Format.csv, as_csv),
                              (Format.paths, as_paths)) if on]
    if len(chosen) > 1:
        raise typer.BadParameter("choose one of --json, --csv, --paths")
    if null:
        return Format.paths0
    return chosen[0] if chosen else Format.table


# json.dumps's bytes for any record (the C encoder built once; store/recordjson.py).
_encode = recordjson.encode


def render_json(value, out: TextIO | None = None) -> None:
    """Print a JSON document (a summary, not records) the way records are printed."""
    (out or sys.stdout).write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A text cell a spreadsheet will not run as a formula: one that starts with
    = + - @ (or a tab or carriage return) gets a leading apostrophe, as
    spreadsheet-safe CSV writers do (OWASP's CSV injection advice)."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_row(rec: dict) -> list:
    labels = rec["labels"]
    row = [spreadsheet_safe(rec["path"]), rec["sha256"] or "", rec["status"],
           spreadsheet_safe(rec["error"] or ""), rec["width"] or "", rec["height"] or ""]
    for rank in range(3):
        if rank < len(labels):
            row += [labels[rank]["label"], f"{labels[rank]['score']:.6f}"]
        else:
            row += ["", ""]
    row += [spreadsheet_safe(";".join(rec["tags"])), rec["classified_at"] or ""]
    return row


def _labels_text(rec: dict) -> str:
    if rec["status"] == "failed":
        return f"({rec['error']})"
    return ", ".join(f"{p['label']} {p['score']:.0%}" + (" (confirmed)" if p.get("confirmed") else "")
                     for p in rec["labels"])


def as_dicts(records: Iterable[ImageRecord | dict]) -> Iterator[dict]:
    """Records in the JSON shape (`ImageRecord.to_dict`), which every format
    renders from; the record reads (store/recordsql.py) build them so already."""
    for rec in records:
        yield rec if type(rec) is dict else rec.to_dict()


def render_records(records: Iterable[ImageRecord | dict], fmt: Format, out: TextIO | None = None,
                   *, single: bool = False, reason: Callable[[dict], str] | None = None) -> int:
    """Write records (`ImageRecord`s, or dicts as their `to_dict()` gives) in
    `fmt`; `single` prints one JSON object instead of a list; `reason` (search)
    says, in the table, which label or tag found each image. Returns how many
    records were written."""
    out = out or sys.stdout
    count = 0
    dicts = as_dicts(records)
    if fmt is Format.json:
        if single:
            for rec in dicts:
                out.write(json.dumps(rec, ensure_ascii=False, indent=2) + "\n")
                count += 1
            return count
        count = write_json_list(map(_encode, dicts), out)
    elif fmt is Format.csv:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for rec in dicts:
            writer.writerow(csv_row(rec))
            count += 1
    elif fmt is Format.paths:
        for rec in dicts:
            out.write(shown(rec["path"]) + "\n")  # a newline in a name is no second path
            count += 1
    elif fmt is Format.paths0:
        for rec in dicts:
            out.write(rec["path"] + "\0")  # as it is: a path holds no NUL
            count += 1
    else:
        count = _render_table(dicts, out, reason)
    return count


def write_json_list(texts: Iterable[str], out: TextIO | None = None) -> int:
    """A JSON list of records already encoded (`_encode`, or store/recordjson.py's
    text), one record a line (recordjson.write_list, which `labels serve` writes
    /api/search with too); returns how many."""
    return recordjson.write_list(texts, out or sys.stdout)


def _render_table(records: Iterable[dict], out: TextIO,
                  reason: Callable[[dict], str] | None = None) -> int:
    """One line per image, streamed (a search over a large library starts printing
    at once and never holds every row to compute column widths):
    PATH  STATUS  LABELS  [TAGS]  (found by: LABEL or TAG)"""
    count = 0
    for rec in records:
        tags = f"  [{', '.join(rec['tags'])}]" if rec["tags"] else ""
        why = reason(rec) if reason else ""
        line = (f"{shown(rec['path'])}  {rec['status']}  {_labels_text(rec)}{tags}"
                + (f"  (found by: {why})" if why else ""))
        out.write(one_line(line.rstrip()) + "\n")  # tags and errors hold what people typed
        count += 1
    if not count:
        out.write("no images\n")
    return count


def floor_note(result, *, chosen: bool = False, query: str | None = None) -> str | None:
    """The stderr line saying how many label matches the configured floor hid from
    `result` (a `query.SearchResult`) and how to see them; None when it hid none,
    or when the person chose the floor (--min-score). `query`: for a command that
    acts on a search and has no --min-score of its own for it (its way to see them is
    `labels search QUERY --min-score 0`)."""
    if not result.hidden or chosen:
        return None
    how = ("--min-score 0 shows them" if query is None else
           f"left out; `labels search {one_line(shlex.join(query.split()))} --min-score 0` lists them")
    return (f"labels: {result.hidden} more image(s) match with a score below "
            f"{result.floor * 100:g}% (search_min_score); {how}")


def search_noting_floor(store, text: str, settings):
    """What `labels search TEXT` finds, for a command that acts on it (`tag --search`,
    `xmp write QUERY`): the configured floor applied, and its note on stderr."""
    from labelsd.serve import query

    result = query.find(store, text, min_score=settings.search_min_score)
    if note := floor_note(result, query=text):
        typer.echo(note, err=True)
    return result
