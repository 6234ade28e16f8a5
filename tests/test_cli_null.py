"""Issue 32, item 3: a file name cannot inject paths into a script. `-0/--null` prints
paths NUL-terminated, as `find -print0` does, for `xargs -0`; without it a path holding
a newline (or any control character) is printed escaped, never raw. And every other
place the CLI shows a path (the table, `show`, `tag`) shows it on one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from labels_cli.app import app
from labelsd.paths import shown
from labelsd.store import tags
from test_search import add_images

runner = CliRunner()
VICTIM = "/home/victim/important.jpg"
NAMES = {
    f"x\n{VICTIM}": [(281, 0.9), (282, 0.05), (285, 0.02)],  # tabby: a cat
    "cr\rOVERWRITTEN.jpg": [(283, 0.8), (281, 0.1), (332, 0.05)],  # Persian cat
    "tab\there ok.jpg": [(285, 0.7), (281, 0.2), (282, 0.05)],  # Egyptian cat
    "plain.jpg": [(282, 0.6), (281, 0.2), (285, 0.1)],  # tiger cat
}


@pytest.fixture
def hostile(store, tmp_path, monkeypatch):
    """A library whose photos a stranger named; name -> stored path."""
    photos = tmp_path / "photos"
    photos.mkdir()
    monkeypatch.chdir(photos)
    stored = add_images(store, NAMES)
    tags.add_tags(store, stored[f"x\n{VICTIM}"], ["line\nbreak"])
    return stored


def labels(db_url, *args) -> bytes:
    result = runner.invoke(app, ["--db", db_url, *args])
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout_bytes


@pytest.mark.parametrize("command", [["search", "cat"], ["list"]])
@pytest.mark.parametrize("null", ["-0", "--null"])
def test_null_prints_each_path_as_it_is_ended_by_a_nul(db_url, hostile, command, null):
    printed = labels(db_url, *command, null)
    assert printed.endswith(b"\0") and b"\n" + VICTIM.encode() + b"\0" in printed
    assert sorted(printed.decode().split("\0")[:-1]) == sorted(hostile.values())
    assert labels(db_url, *command, "--paths", null) == printed  # --paths -0: the same


@pytest.mark.parametrize("command", [["search", "cat"], ["list"]])
def test_paths_without_null_never_print_a_control_character(db_url, hostile, command):
    lines = labels(db_url, *command, "--paths").decode().split("\n")
    assert lines[-1] == "" and len(lines) == len(NAMES) + 1, lines
    assert sorted(lines[:-1]) == sorted(shown(p) for p in hostile.values())
    assert VICTIM not in lines and "\r" not in "".join(lines)
    assert all(line.isprintable() for line in lines), lines


def test_the_table_show_and_tag_keep_each_name_on_its_line(db_url, hostile):
    table = labels(db_url, "list").decode()
    assert len(table.split("\n")) == len(NAMES) + 1 and "\r" not in table and "\t" not in table, table
    assert f"x\\n{VICTIM}" in table and "[line\\nbreak]" in table
    hostile_path = hostile[f"x\n{VICTIM}"]
    shown_record = labels(db_url, "show", hostile_path).decode()
    assert shown_record.split("\n")[0] == shown(hostile_path), shown_record
    assert "tags:    line\\nbreak" in shown_record
    assert all(line.isprintable() for line in shown_record.split("\n")), shown_record
    tagged = labels(db_url, "tag", hostile["cr\rOVERWRITTEN.jpg"], "ok").decode()
    assert tagged == f"{shown(hostile['cr' + chr(13) + 'OVERWRITTEN.jpg'])}: ok\n", repr(tagged)


def test_null_goes_with_paths_only(db_url, hostile):
    for other in ("--json", "--csv"):
        result = runner.invoke(app, ["--db", db_url, "search", "cat", other, "-0"])
        assert result.exit_code == 2 and "--null" in result.output, result.output


def test_every_command_that_prints_paths_has_null():
    """--null is part of the shared output option: a command that gets --paths (as
    `labels similar` will) gets -0/--null with it."""
    group = get_command(app)
    with_paths = {}
    for name, command in group.commands.items():
        for sub in getattr(command, "commands", {name: command}).values():
            opts = {o for p in sub.params for o in getattr(p, "opts", [])}
            if "--paths" in opts:
                with_paths[sub.name] = opts
    assert {"search", "list"} <= set(with_paths), with_paths
    assert all({"-0", "--null"} <= opts for opts in with_paths.values()), with_paths


def test_xargs_0_gets_the_paths_a_stranger_named_as_they_are(db_url, hostile, tmp_path):
    """The issue's script, made safe: `labels search cat -0 | xargs -0` sees the one
    file, not a second path chosen by whoever named it."""
    code = ("import sys\nfrom labels_cli.app import main\n"
            "sys.argv = ['labels', *sys.argv[1:]]\nmain()\n")
    search = subprocess.run([sys.executable, "-c", code, "--db", db_url, "search", "cat", "-0"],
                            capture_output=True, timeout=60, cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    counted = subprocess.run(["xargs", "-0", "-n1", "printf", "<%s>\\n"], input=search.stdout,
                             capture_output=True, timeout=60)
    assert counted.stdout.decode().count("<") == len(NAMES)
    assert f"<{VICTIM}>" not in counted.stdout.decode()
