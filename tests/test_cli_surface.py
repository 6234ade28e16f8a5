"""The `labels` command as a person and a script meet it (issue 16): several
files at once, plurals and near misses, files that are not there, export
formats, version and help, pipes, exit codes, read-only commands that create
nothing, and spreadsheet-safe CSV. Driven through the real app."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from typer.main import get_command

from clitree import leaves, walk
from labels_cli.app import app
from labelsd import __version__
from labelsd.store import nodes, tags
from labelsd.store.schema import Node
from test_cli_query import labels, names, ok, runner  # the CLI helpers, written once
from test_search import LIBRARY, add_images, add_library


@pytest.fixture
def library(store, tmp_path, monkeypatch):
    return add_library(store, tmp_path, monkeypatch, {"persian.jpg": ["fluffy"]})


def tags_of(db_url, path) -> list[str]:
    return json.loads(ok(labels(db_url, "show", path, "--json")))["tags"]


# ---- several files at once -----------------------------------------------------------


def test_tag_several_files_with_t(db_url, library):
    out = ok(labels(db_url, "tag", library["tabby.jpg"], library["hotdog.jpg"],
                    "-t", "trip", "-t", "Grandma's 90th"))
    assert len(out.splitlines()) == 2
    for name in ("tabby.jpg", "hotdog.jpg"):
        assert tags_of(db_url, library[name]) == ["Grandma's 90th", "trip"]
    ok(labels(db_url, "untag", library["tabby.jpg"], library["hotdog.jpg"], "-t", "TRIP"))
    assert tags_of(db_url, library["hotdog.jpg"]) == ["Grandma's 90th"]


def test_a_tag_that_names_a_file_is_refused(db_url, library, tmp_path):
    other = tmp_path / "photos" / "UPPER.JPG"
    other.write_bytes(b"jpeg")
    result = labels(db_url, "tag", library["tabby.jpg"], str(other), "beach")
    assert result.exit_code == 2
    assert "is a file, not a tag" in result.stderr and "-t" in result.stderr
    assert tags_of(db_url, library["tabby.jpg"]) == []  # nothing changed


def test_tag_every_result_of_a_search(db_url, library):
    result = labels(db_url, "tag", "--search", "cats", "-t", "pets")
    out = ok(result)  # what `labels search cats` lists: the shy cat's Siamese 5% is below the floor
    assert sorted(names(line.split(":")[0] for line in out.splitlines())) == ["persian.jpg", "tabby.jpg"]
    assert "1 more image(s) match with a score below 10%" in result.stderr
    assert "left out; `labels search cats --min-score 0` lists them" in result.stderr  # tag has no --min-score
    assert names(ok(labels(db_url, "search", "pets", "--paths")).splitlines()) == [
        "persian.jpg", "tabby.jpg"]


def test_tagging_several_files_is_all_or_nothing(db_url, library):
    result = labels(db_url, "tag", library["tabby.jpg"], "/nowhere/nope.jpg", "-t", "x")
    assert result.exit_code == 1
    assert result.stderr.strip() == "labels: error: /nowhere/nope.jpg: no such file"
    assert tags_of(db_url, library["tabby.jpg"]) == []


# ---- plurals, tag words, near misses -----------------------------------------------------


@pytest.mark.parametrize("query", ["cats", "Cats", "CAT"])
def test_plurals_find_what_the_singular_finds(db_url, library, query):
    assert names(ok(labels(db_url, "search", query, "--paths", "--min-score", "0")).splitlines()) == [
        "tabby.jpg", "persian.jpg", "shy_cat.jpg"]


def test_dogs_and_retrievers(db_url, library):
    assert names(ok(labels(db_url, "search", "dogs", "--paths")).splitlines()) == ["retriever.jpg"]
    assert names(ok(labels(db_url, "search", "golden retrievers", "--paths")).splitlines()) == [
        "retriever.jpg"]


def test_a_word_of_a_tag_finds_it(db_url, library):
    ok(labels(db_url, "tag", library["hotdog.jpg"], "Grandma's 90th"))
    for query in ("grandma", "Grandmas", "90th", "grandma's 90th"):
        assert names(ok(labels(db_url, "search", query, "--paths")).splitlines()) == [
            "hotdog.jpg"], query


def test_no_match_says_so_and_suggests_classes(db_url, library):
    result = labels(db_url, "search", "dgo", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert "no class or tag matches 'dgo'" in result.stderr and "dog" in result.stderr
    quiet = labels(db_url, "search", "dog", "--json")
    assert quiet.stderr == ""


def test_the_table_says_which_label_made_each_hit(db_url, library):
    lines = ok(labels(db_url, "search", "cat", "--min-score", "0")).splitlines()
    assert lines[0].endswith("(found by: tabby 90%)")
    assert lines[2].endswith("(found by: Siamese cat 5%)")  # its third label
    assert ok(labels(db_url, "search", "fluffy")).splitlines()[0].endswith("(found by: tag fluffy)")


# ---- files that are not there, export formats --------------------------------------------


def test_show_a_file_that_does_not_exist(db_url, library, tmp_path):
    result = labels(db_url, "show", str(tmp_path / "nope.jpg"))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"labels: error: {tmp_path / 'nope.jpg'}: no such file"
    assert result.stdout == ""  # issue 26: the error came on stdout
    as_json = labels(db_url, "show", str(tmp_path / "nope.jpg"), "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["reason"] == "no such file"
    assert as_json.stderr.strip() == result.stderr.strip()


def test_show_a_folder_says_it_is_one_and_what_lists_images(db_url, library, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    result = labels(db_url, "show", str(inbox))
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"labels: error: {inbox} is a folder: labels show takes one image")
    assert "labels list" in line and "labels search" in line
    as_json = json.loads(labels(db_url, "show", str(inbox), "--json").stdout)
    assert as_json == {"path": str(inbox), "status": "untracked", "reason": "a folder, not an image"}


def test_export_format_follows_the_suffix(db_url, library, tmp_path):
    ok(labels(db_url, "export", "-o", str(tmp_path / "x.csv")))
    rows = list(csv.reader(io.StringIO((tmp_path / "x.csv").read_text())))
    assert rows[0][0] == "path" and len(rows) == len(LIBRARY) + 1
    ok(labels(db_url, "export", "-o", str(tmp_path / "x.json")))
    assert len(json.loads((tmp_path / "x.json").read_text())) == len(LIBRARY)
    ok(labels(db_url, "export", "--format", "json", "-o", str(tmp_path / "y.csv")))
    assert len(json.loads((tmp_path / "y.csv").read_text())) == len(LIBRARY)


@pytest.mark.parametrize("command, name", [("export", "labels.xlsx"), ("export", "labels.txt"),
                                           ("gallery", "cats.gif")])
def test_an_output_suffix_it_cannot_write_is_a_usage_error(db_url, library, tmp_path, command, name):
    # Issue 26: `export -o labels.xlsx` wrote JSON into it while `gallery -o x.gif` refused.
    args = ["cat"] if command == "gallery" else []
    result = labels(db_url, command, *args, "-o", str(tmp_path / name))
    assert result.exit_code == 2 and "cannot tell the format of" in result.stderr, result.output
    assert not (tmp_path / name).exists()
    if command == "export":  # saying the format is enough
        ok(labels(db_url, "export", "--format", "csv", "-o", str(tmp_path / name)))
        assert (tmp_path / name).read_text().startswith("path,")


def test_csv_cells_never_start_a_formula(db_url, store, tmp_path):
    photo = str(tmp_path / "=cmd.jpg")
    add_images(store, {photo: LIBRARY["tabby.jpg"]})
    tags.add_tags(store, photo, ['=HYPERLINK("http://evil","x")', "@sum", "+1", "-2"])
    rows = list(csv.reader(io.StringIO(ok(labels(db_url, "export", "--format", "csv")))))
    header, row = rows
    record = dict(zip(header, row))
    assert record["tags"].startswith("'")
    for cell in row:
        assert not cell.startswith(("=", "+", "-", "@")), cell
    assert record["path"].endswith("=cmd.jpg")  # only a leading character is neutralised


# ---- conventions ---------------------------------------------------------------------------


def test_version_and_short_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout
    assert runner.invoke(app, ["-h"]).exit_code == 0
    assert "Usage" in runner.invoke(app, ["search", "-h"]).stdout


@pytest.mark.parametrize("path", [p for p, _ in walk(get_command(app)) if p],
                         ids=lambda p: " ".join(p))
def test_help_shows_what_values_are_not_python_types(path):
    text = runner.invoke(app, [*path, "--help"]).stdout
    for python in ("<list", "<str", "<int", "<float", "<path", "{", "TEXT", "INTEGER", "FLOAT"):
        assert python not in text, (path, python, text)


def test_json_help_says_what_each_command_prints():
    assert "one image record (an object, not a list)" in runner.invoke(app, ["show", "-h"]).stdout
    assert "a list of image records" in runner.invoke(app, ["search", "-h"]).stdout


def _main(*args, **kwargs):
    return subprocess.run([sys.executable, "-c", "from labels_cli.app import main; main()", *args],
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_a_closed_pipe_is_normal(db_url, store, tmp_path):
    add_images(store, {str(tmp_path / f"img{i:05d}.jpg"): LIBRARY["tabby.jpg"]
                       for i in range(3000)})
    done = subprocess.run(
        f"{sys.executable} -c 'from labels_cli.app import main; main()' --db {db_url} list"
        " | head -1; echo \"rc=${PIPESTATUS[0]}\"",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1] == "rc=0", done
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr


def test_status_exits_3_without_a_service_and_names_the_database(db_url, library):
    result = labels(db_url, "status")
    assert result.exit_code == 3
    assert db_url in result.stdout and "not running" in result.stdout
    assert labels(db_url, "status", "--json").exit_code == 3


def test_status_counts_say_what_they_count_and_old_nodes_are_left_out(db_url, store, library):
    for node_id, age in (("box:1", timedelta(seconds=1)), ("box:2", timedelta(days=3))):
        nodes.register(store, node_id, model="inception_v3", device="CPU", watching=["/p"])
        nodes.heartbeat(store, node_id, done=22, failed=9)
        with store.write() as session:
            session.get(Node, node_id).heartbeat_at = datetime.now(timezone.utc) - age
    text = ok(labels(db_url, "status"))
    assert "since it started: 22 labeled, 9 failed" in text
    assert text.splitlines()[-1] == "running: in the library 0 queued, 7 done, 0 failed, 1 missing"
    assert text.count("inception_v3 on CPU") == 1 and "1 service(s) stopped over a day ago" in text
    assert ok(labels(db_url, "status", "--all")).count("inception_v3 on CPU") == 2


# ---- help, and the global options after the command -------------------------------------


@pytest.mark.parametrize("path", [(), ("search",), ("xmp", "write"), ("db", "copy")], ids=" ".join)
def test_labels_help_is_the_help(path):
    # Issue 26: `labels help` was "No such command".
    asked = runner.invoke(app, ["help", *path])
    assert asked.exit_code == 0, asked.output
    assert asked.stdout == runner.invoke(app, [*path, "--help"]).stdout


def test_labels_help_of_no_such_command_names_the_commands():
    result = runner.invoke(app, ["help", "serach"])
    assert result.exit_code == 2 and "no command 'serach'" in result.stderr and "search" in result.stderr


def test_every_command_takes_the_global_options_after_its_name():
    for path, command in leaves(get_command(app)):
        given = {opt for p in command.params for opt in getattr(p, "opts", ())}
        assert {"--db", "--config"} <= given, path


def test_db_and_config_after_the_command_count(db_url, library, tmp_path):
    # Issue 26: `labels search cat --db X` said "No such option: --db".
    before = runner.invoke(app, ["--db", db_url, "search", "cat", "--json"])
    after = runner.invoke(app, ["search", "cat", "--json", "--db", db_url])
    assert ok(after) == ok(before) and json.loads(after.stdout)
    missing = runner.invoke(app, ["xmp", "write", "--db", str(tmp_path / "nope.db")])
    assert missing.exit_code == 1 and "no database at" in missing.stderr
    config = tmp_path / "c.toml"
    config.write_text("search_min_score = 0\n")
    everything = runner.invoke(app, ["search", "cat", "--paths", "--config", str(config), "--db", db_url])
    assert len(ok(everything).splitlines()) == 3  # the shy cat's 5% too
    twice = runner.invoke(app, ["--db", db_url, "search", "cat", "--db", str(tmp_path / "other.db")])
    assert twice.exit_code == 2 and "given twice" in twice.stderr


# ---- no command but scan creates a library -------------------------------------------

# Arguments that get each command as far as opening the library; None: it opens none.
# Every `labels` command must be here (the test below introspects them): a new one
# that changes the library asks `state(ctx).store()`, which refuses a missing one.
OPENS_A_LIBRARY = {
    ("search",): ["cat"], ("show",): ["x.jpg"], ("list",): [], ("stats",): [],
    ("tags",): [], ("status",): [], ("export",): [], ("gallery",): ["cat", "-o", "g.html"],
    ("tag",): ["x.jpg", "foo"], ("untag",): ["x.jpg", "foo"], ("retry",): [],
    ("xmp", "write"): [], ("db", "copy"): ["--to", "{typo}/copy.db"], ("serve",): ["--port", "0"],
    ("reject",): ["x.jpg", "-l", "tabby"], ("unreject",): ["x.jpg", "-l", "tabby"],
    ("confirm",): ["x.jpg", "-l", "tabby"], ("unconfirm",): ["x.jpg", "-l", "tabby"],
    ("similar",): ["x.jpg"], ("duplicates",): [],
    ("scan",): None,  # creates one on purpose: test_scan_starts_a_library
    ("model", "info"): None, ("model", "fetch"): None, ("help",): None,
}


def test_every_command_says_whether_it_opens_a_library():
    listed = set(OPENS_A_LIBRARY)
    commands = {path for path, _ in leaves(get_command(app))}
    assert commands == listed, "add the new command to OPENS_A_LIBRARY"


@pytest.mark.parametrize("path", [p for p, args in OPENS_A_LIBRARY.items() if args is not None],
                         ids=" ".join)
def test_no_command_but_scan_creates_a_library(tmp_path, path):
    # Issue 26: `labels --db nope.db tag photo.jpg foo` left a new empty nope.db.
    typo = tmp_path / "typo"
    db = typo / "x.db"
    args = [a.format(typo=typo) for a in OPENS_A_LIBRARY[path]]
    result = runner.invoke(app, ["--db", str(db), *path, *args])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"no database at {db}" in line and "the default one is" in line, line
    assert not typo.exists() and result.stdout == ""


def test_an_empty_file_is_not_made_a_library_by_a_write(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    result = runner.invoke(app, ["--db", str(empty), "retry"])
    assert result.exit_code == 1 and "not a labelsd database" in result.stderr
    assert empty.stat().st_size == 0


@pytest.mark.parametrize("command", ["retry", "list"])
def test_an_empty_server_database_is_not_made_a_library(pg_url, command):
    from sqlalchemy import create_engine, inspect

    result = runner.invoke(app, ["--db", pg_url, command])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "no labelsd library in" in line, line
    engine = create_engine(pg_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_read_only_commands_never_import_sqlalchemy_or_pydantic(db_url, library):
    # Each is tens of milliseconds of start-up that a query does not use: SQLAlchemy
    # (the service's store), pydantic (typer 0.29 builds a TypeAdapter per parameter).
    if "://" in db_url:
        pytest.skip("PostgreSQL goes through SQLAlchemy")
    code = ("import sys\nfrom labels_cli.app import main\n"
            f"sys.argv = ['labels', '--db', {db_url!r}, 'search', 'cats', '--limit', '5', '--json']\n"
            "try:\n    main()\nexcept SystemExit as done:\n    assert not done.code\n"
            "print('SQLA', 'sqlalchemy' in sys.modules, 'pydantic', 'pydantic' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "SQLA False pydantic False"


def test_a_database_whose_name_looks_like_a_uri_opens(tmp_path):
    from labelsd.store.engine import open_store

    plain, odd = tmp_path / "plain.db", tmp_path / "odd?name#1%.db"
    open_store(str(plain)).close()
    plain.rename(odd)
    result = runner.invoke(app, ["--db", str(odd), "list", "--json"])
    assert result.exit_code == 0 and result.stdout.strip() == "[]", result.output


def test_shell_completion_is_there():
    script = subprocess.run([sys.executable, "-c", "from labels_cli.app import main; main()"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "_LABELS_COMPLETE": "source_bash"})
    assert script.returncode == 0, script.stderr
    assert "complete -o default -F _labels_completion labels" in script.stdout
    done = subprocess.run([sys.executable, "-c", "from labels_cli.app import main; main()"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "_LABELS_COMPLETE": "complete_bash",
                               "COMP_WORDS": "labels sea", "COMP_CWORD": "1"})
    assert done.stdout.split() == ["search"], done


def _complete(words: str) -> list[str]:
    """What bash completion offers after `words` (ending in a space: a new word), through
    the machinery a shell uses: `_LABELS_COMPLETE` in the environment."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)  # the word being completed
    done = runner.invoke(app, [], prog_name="labels", env={
        "_LABELS_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert done.exit_code == 0, done.output
    return done.stdout.split()


def test_every_option_with_fixed_choices_completes_them():
    fixed = {}
    for path, command in walk(get_command(app), ("labels",)):
        for option in (p for p in command.params if p.param_type_name == "option"):
            listed = option.metavar or ""
            if "|" in listed and listed == listed.lower():  # auto|cpu|gpu, not PATH|URL
                assert list(getattr(option.type, "choices", ())) == listed.split("|"), (path, option.opts)
                fixed[(*path, option.opts[-1])] = listed.split("|")
    assert {words[1:] for words in fixed} >= {
        ("list", "--status"), ("export", "--format"), ("scan", "--model"), ("scan", "--device"),
        ("scan", "--precision"), ("model", "info", "--model"), ("model", "info", "--device"),
        ("model", "info", "--precision")}
    for words, offered in fixed.items():
        assert _complete(" ".join(words) + " ") == offered, words
    assert _complete("labels list --status f") == ["failed"]


def test_list_status_completes_in_a_shell():
    """`labels list --status <TAB>`, as bash asks the installed script."""
    done = subprocess.run([sys.executable, "-c", "from labels_cli.app import main; main()"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "_LABELS_COMPLETE": "complete_bash",
                               "COMP_WORDS": "labels list --status ", "COMP_CWORD": "3"})
    assert done.stdout.split() == ["pending", "done", "failed", "missing"], done
