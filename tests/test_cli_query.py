"""The query commands through the real `labels` app (CliRunner) against a real
database: search, list, show, tag, untag, tags, stats, status, export."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from clitree import walk
from labels_cli import render
from labels_cli.app import app
from labels_cli.render import CSV_COLUMNS
from labelsd import records
from labelsd.serve import query
from labelsd.store import contents, nodes, workqueue
from labelsd.store.schema import Node
from test_search import LIBRARY, add_images, add_library

runner = CliRunner()


@pytest.fixture
def library(store, tmp_path, monkeypatch):
    return add_library(store, tmp_path, monkeypatch, {"persian.jpg": ["fluffy"]})


def labels(db_url, *args):
    return runner.invoke(app, ["--db", db_url, *args])


def ok(result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def names(paths) -> list[str]:
    return [p.rsplit("/", 1)[-1] for p in paths]


# ---- search ------------------------------------------------------------------


def test_search_json(db_url, library):
    records = json.loads(ok(labels(db_url, "search", "cat", "--json", "--min-score", "0")))
    assert names(r["path"] for r in records) == ["tabby.jpg", "persian.jpg", "shy_cat.jpg"]
    persian = records[1]
    assert set(persian) == {"path", "sha256", "status", "error", "width", "height", "labels",
                            "tags", "classified_at", "taken_at", "camera", "gps", "model", "rejected"}
    assert persian["status"] == "done" and persian["tags"] == ["fluffy"]
    assert persian["labels"][0] == {"rank": 1, "label": "Persian cat", "wnid": "n02123394",
                                    "class_index": 283, "score": pytest.approx(0.70),
                                    "confirmed": False}
    assert persian["rejected"] == []


def test_search_and_list_print_json_dumps_bytes(db_url, store, library, tmp_path):
    """`--json` prints, byte for byte, `json.dumps` of each record the Store reads
    (Python's float repr, ", " and ": ", non-ASCII as is), one record a line."""
    odd = add_images(store, {str(tmp_path / "Ünï ✓ cat.jpg"): [(285, 1e-05), (281, 3.2e-07),
                                                                (282, 0.1234567890123456789)]})
    for args, expected in ((["search", "cat"], query.search(store, "cat")),
                           (["list"], list(store.records()))):
        assert any(r.path in odd.values() for r in expected)
        lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in expected]
        printed = ok(labels(db_url, *args, "--json"))
        assert printed == "[\n  " + ",\n  ".join(lines) + "\n]\n"


_json_leaf = (st.none() | st.booleans() | st.integers() | st.floats()
              | st.text(st.characters(codec=None, exclude_categories=())))
_json_value = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(record=st.dictionaries(st.text(max_size=12), _json_value, max_size=8))
def test_the_record_encoder_writes_json_dumps_bytes(record):
    """The one record encoder (the C encoder built once) writes json.dumps's text
    for anything: NaN and infinities, lone surrogates (paths that are not
    UTF-8), control characters, big integers, nesting."""
    assert render._encode(record) == json.dumps(record, ensure_ascii=False)


def test_the_record_encoder_refuses_what_json_dumps_refuses():
    with pytest.raises(TypeError, match="not JSON serializable"):
        render._encode({"when": datetime.now()})


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["dog"], ["retriever.jpg"]),
        (["cat", "--min-score", "0.5"], ["tabby.jpg", "persian.jpg"]),
        (["cat", "--exact"], []),
        (["Persian_Cat", "--exact"], ["persian.jpg"]),
        (["cat", "--tag", "Fluffy"], ["persian.jpg"]),
        (["cat", "--tag", "fluffy", "--tag", "other"], []),
        (["cat", "--limit", "2"], ["tabby.jpg", "persian.jpg"]),
        (["cat", "--include-missing", "--limit", "1"], ["gone_cat.jpg"]),
        (["fluffy"], ["persian.jpg"]),
        (["unicorn"], []),
        (["'; DROP TABLE paths; --"], []),
        (["%"], []),
    ],
)
def test_search_options(db_url, library, args, expected):
    assert names(ok(labels(db_url, "search", *args, "--paths")).splitlines()) == expected


FLOOR_NOTE = ("labels: 1 more image(s) match with a score below 10% (search_min_score); "
              "--min-score 0 shows them")


def test_search_hides_near_zero_matches_and_says_how_to_see_them(db_url, library):
    # Issue 26: `labels search animal` listed a green square found by `jellyfish 1%`.
    for fmt in ("--paths", "--json", "--csv"):
        result = labels(db_url, "search", "cat", fmt)
        assert "shy_cat.jpg" not in ok(result) and "tabby.jpg" in result.stdout
        assert result.stderr.strip() == FLOOR_NOTE, fmt  # --json honours it too, and says so
    everything = labels(db_url, "search", "cat", "--min-score", "0", "--paths")
    assert names(ok(everything).splitlines()) == ["tabby.jpg", "persian.jpg", "shy_cat.jpg"]
    assert everything.stderr == ""
    chosen = labels(db_url, "search", "cat", "--min-score", "0.8", "--paths")
    assert names(ok(chosen).splitlines()) == ["tabby.jpg"] and chosen.stderr == ""  # asked for


@pytest.mark.parametrize("given", ["0.5", "50%", " 50% ", "0.50"])
def test_min_score_takes_a_fraction_or_a_percentage(db_url, library, given):
    found = ok(labels(db_url, "search", "cat", "--min-score", given, "--paths"))
    assert names(found.splitlines()) == ["tabby.jpg", "persian.jpg"]


def test_min_score_over_1_is_refused_with_the_percentage_to_write(db_url, library):
    # A bare 50 is not read as 50%: would 1 be 1% or 100%? The error says what to write.
    result = labels(db_url, "search", "cat", "--min-score", "50")
    assert result.exit_code == 2 and "give a fraction (0.5) or a percentage (50%)" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("value", ["0.01", '"1%"'])
def test_the_floor_is_a_setting(db_url, library, tmp_path, value):
    config = tmp_path / "c.toml"
    config.write_text(f"search_min_score = {value}\n")
    result = runner.invoke(app, ["--db", db_url, "--config", str(config), "search", "cat", "--paths"])
    assert names(ok(result).splitlines()) == ["tabby.jpg", "persian.jpg", "shy_cat.jpg"]
    assert result.stderr == ""


def test_empty_search_prints_an_empty_list(db_url, library):
    assert ok(labels(db_url, "search", "unicorn", "--json")).strip() == "[]"
    assert ok(labels(db_url, "search", "unicorn", "--csv")).splitlines() == [",".join(CSV_COLUMNS)]
    assert ok(labels(db_url, "search", "unicorn", "--paths")) == ""
    assert "no images" in ok(labels(db_url, "search", "unicorn"))


def test_search_csv(db_url, library):
    rows = list(csv.reader(io.StringIO(ok(labels(db_url, "search", "dog", "--csv")))))
    assert rows[0] == CSV_COLUMNS
    (row,) = rows[1:]
    record = dict(zip(CSV_COLUMNS, row))
    assert names([record["path"]]) == ["retriever.jpg"]
    assert (record["label1"], record["score1"]) == ("golden retriever", "0.850000")
    assert (record["status"], record["width"], record["height"]) == ("done", "640", "480")


def test_search_table(db_url, library):
    out = ok(labels(db_url, "search", "dog"))
    assert "retriever.jpg" in out
    assert "golden retriever 85%" in out
    assert "hotdog" not in out


# ---- list and show ---------------------------------------------------------------


def test_list_formats(db_url, library):
    every = json.loads(ok(labels(db_url, "list", "--json")))
    assert len(every) == len(LIBRARY)
    assert names(ok(labels(db_url, "list", "--status", "missing", "--paths")).splitlines()) == [
        "gone_cat.jpg"]
    rows = list(csv.reader(io.StringIO(ok(labels(db_url, "list", "--csv")))))
    assert rows[0] == CSV_COLUMNS and len(rows) == len(LIBRARY) + 1
    assert "tabby.jpg" in ok(labels(db_url, "list"))


def test_show(db_url, library):
    record = json.loads(ok(labels(db_url, "show", library["persian.jpg"], "--json")))
    assert record["path"] == library["persian.jpg"] and record["tags"] == ["fluffy"]
    text = ok(labels(db_url, "show", library["persian.jpg"]))
    assert "Persian cat" in text and "fluffy" in text


# ---- tags ------------------------------------------------------------------------


def test_tag_untag_round_trip(db_url, library):
    cat = library["tabby.jpg"]
    assert "Ferien 🏖, 東京" in ok(labels(db_url, "tag", cat, "Ferien 🏖", "東京"))
    assert json.loads(ok(labels(db_url, "show", cat, "--json")))["tags"] == ["Ferien 🏖", "東京"]
    assert names(ok(labels(db_url, "search", "東京", "--paths")).splitlines()) == ["tabby.jpg"]
    assert names(ok(labels(db_url, "search", "ferien 🏖", "--paths")).splitlines()) == [
        "tabby.jpg"]
    ok(labels(db_url, "tag", cat, "ferien 🏖"))  # the same tag in another case: kept once
    assert json.loads(ok(labels(db_url, "show", cat, "--json")))["tags"] == ["Ferien 🏖", "東京"]
    assert ok(labels(db_url, "untag", cat, "FERIEN 🏖")).strip().endswith(": 東京")
    untagged = labels(db_url, "untag", cat, "東京", "never-there")
    assert ok(untagged).strip().endswith("(no tags)")
    assert untagged.stderr == f"labels: {cat} has no tag 'never-there': nothing removed\n"
    assert json.loads(ok(labels(db_url, "show", cat, "--json")))["tags"] == []


def test_retry_says_nothing_happens_until_the_service_runs(db_url, store, tmp_path):
    photo = str(tmp_path / "broken.jpg")
    workqueue.enqueue(store, [photo])
    [claim] = workqueue.claim(store, "test-node", limit=10)
    contents.record_outcomes(store, "test-node", [records.Outcome(
        claim=claim, kind="bad_image", error="truncated JPEG", sha256="9" * 64, size=1, mtime_ns=1)])
    retried = labels(db_url, "retry")
    assert ok(retried) == "queued 1 failed image(s) again\n"
    assert retried.stderr == ("labels: no labelsd is running on this library: they wait in the queue, "
                              "and nothing happens until it runs\n")
    nodes.register(store, "box:4242", model="InceptionV3/imagenet", device="cpu", watching=[])
    nodes.heartbeat(store, "box:4242", done=0, failed=0)
    assert labels(db_url, "retry").stderr == ""  # nothing to queue; and a service runs


def test_tags_follow_a_rename_and_apply_to_copies(db_url, store, tmp_path):
    sha = "ef" * 32
    a, b = str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")
    add_images(store, {a: LIBRARY["tabby.jpg"], b: LIBRARY["tabby.jpg"]},
               sha_of={a: sha, b: sha})
    ok(labels(db_url, "tag", a, "東京"))
    assert json.loads(ok(labels(db_url, "show", b, "--json")))["tags"] == ["東京"]
    renamed = str(tmp_path / "renamed.jpg")
    assert contents.move_path(store, a, renamed)
    assert json.loads(ok(labels(db_url, "show", renamed, "--json")))["tags"] == ["東京"]
    assert names(ok(labels(db_url, "search", "cat", "--tag", "東京", "--paths")).splitlines()) == [
        "b.jpg", "renamed.jpg"]
    assert json.loads(ok(labels(db_url, "tags", "--json"))) == [
        {"tag": "東京", "count": 2, "contents": 1, "imported": 0}]


def test_tags_command(db_url, library):
    ok(labels(db_url, "tag", library["tabby.jpg"], "fluffy", "indoor"))
    assert json.loads(ok(labels(db_url, "tags", "--json"))) == [
        {"tag": "fluffy", "count": 2, "contents": 2, "imported": 0},
        {"tag": "indoor", "count": 1, "contents": 1, "imported": 0}]
    out = ok(labels(db_url, "tags")).splitlines()
    assert [line.split() for line in out] == [["2", "fluffy"], ["1", "indoor"]]


def test_no_tags(db_url, store):
    assert json.loads(ok(labels(db_url, "tags", "--json"))) == []
    assert ok(labels(db_url, "tags")).strip() == "no tags"


# ---- stats, status, export -----------------------------------------------------------


def test_stats(db_url, library):
    result = json.loads(ok(labels(db_url, "stats", "--json")))
    assert result["counts"] == {"pending": 0, "done": 7, "failed": 0, "missing": 1}
    assert (result["images"], result["contents"], result["tags"]) == (8, 8, 1)
    assert len(result["top_labels"]) == 7
    assert {"label": "tabby", "count": 1} in result["top_labels"]
    text = ok(labels(db_url, "stats"))
    assert "missing 1" in text and "golden retriever" in text


def not_running(result) -> str:
    """`labels status` exits 3 when no service runs, as `systemctl status` does."""
    assert result.exit_code == 3, (result.exit_code, result.output, result.exception)
    return result.stdout


def test_status_without_a_service(db_url, library):
    assert json.loads(not_running(labels(db_url, "status", "--json"))) == {
        "running": False, "pid": None, "model": "", "device": "", "runtime": "", "precision": "", "auto": None,
        "watching": [],
        "queued": 0, "done": 7, "failed": 0, "missing": 1, "heartbeat_age_s": None,
        "database": db_url, "nodes": [], "nodes_hidden": 0,
        "embeddings": {"model": "", "done": 0, "total": 8}}  # 8 contents labelled, none embedded
    assert "not running" in not_running(labels(db_url, "status"))


def test_status_with_a_live_then_stale_service(db_url, store, library, tmp_path):
    workqueue.enqueue(store, [str(tmp_path / "photos" / "new.jpg")])
    nodes.register(store, "box:4242", model="inception_v3", device="GPU:0",
                   watching=[str(tmp_path / "photos")])
    nodes.heartbeat(store, "box:4242", done=7, failed=0)
    status = json.loads(ok(labels(db_url, "status", "--json")))
    assert status["running"] is True
    assert (status["pid"], status["model"], status["device"]) == (os.getpid(), "inception_v3",
                                                                  "GPU:0")
    assert status["watching"] == [str(tmp_path / "photos")]
    assert 0 <= status["heartbeat_age_s"] < nodes.ALIVE_WITHIN_S
    assert (status["queued"], status["done"], status["missing"]) == (1, 7, 1)
    (node,) = status["nodes"]
    assert node["alive"] is True and node["done"] == 7 and node["model"] == "inception_v3"
    assert {"host", "pid", "device", "model", "watching", "heartbeat_age_s", "alive", "done",
            "failed"} <= set(node)
    text = ok(labels(db_url, "status"))
    assert "running" in text and "GPU:0" in text and "1 queued" in text

    with store.write() as session:  # the service died a minute ago
        session.get(Node, "box:4242").heartbeat_at = (
            datetime.now(timezone.utc) - timedelta(seconds=60))
    status = json.loads(not_running(labels(db_url, "status", "--json")))
    assert status["running"] is False and status["nodes"][0]["alive"] is False
    assert status["heartbeat_age_s"] >= 60
    assert "not running" in not_running(labels(db_url, "status"))


def test_export_to_stdout(db_url, library):
    exported = json.loads(ok(labels(db_url, "export")))
    assert names(r["path"] for r in exported) == sorted(LIBRARY)
    rows = list(csv.reader(io.StringIO(ok(labels(db_url, "export", "--format", "csv")))))
    assert rows[0] == CSV_COLUMNS and len(rows) == len(LIBRARY) + 1


def test_export_to_a_file_replaces_it_atomically(db_url, library, tmp_path):
    target = tmp_path / "out" / "labels.json"
    target.parent.mkdir()
    target.write_text("old")
    result = labels(db_url, "export", "-o", str(target))
    assert ok(result) == ""
    assert f"exported {len(LIBRARY)}" in result.stderr
    assert len(json.loads(target.read_text())) == len(LIBRARY)
    ok(labels(db_url, "export", "--format", "csv", "-o", str(target)))
    assert target.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert os.listdir(target.parent) == ["labels.json"]  # no temporary file left


def test_atomic_output_leaves_the_old_file_on_error(tmp_path):
    target = tmp_path / "labels.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), query.atomic_output(target) as out:
        out.write("half")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["labels.csv"]


# ---- exit codes and help --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["tag", "/nowhere/nope.jpg", "x"],
        ["untag", "/nowhere/nope.jpg", "x"],
        ["show", "/nowhere/nope.jpg"],
        ["export", "-o", "/nowhere/at/all/labels.json"],
    ],
)
def test_user_errors_exit_1_with_one_line(db_url, library, args):
    result = labels(db_url, *args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = (result.stderr or result.stdout).strip().splitlines()
    assert len(lines) == 1 and "/nowhere" in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["search"],
        ["search", "cat", "--json", "--csv"],
        ["search", "cat", "--limit", "0"],
        ["search", "cat", "--min-score", "1.5"],
        ["search", "cat", "--min-score", "lots"],
        ["tag", "PATH"],
        ["tag", "PATH", "   "],
        ["untag", "PATH", ""],
        ["list", "--status", "asleep"],
        ["export", "--format", "xml"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(db_url, library, args):
    args = [library["tabby.jpg"] if a == "PATH" else a for a in args]
    result = labels(db_url, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_every_command_and_option_has_help():
    tree = list(walk(get_command(app)))
    assert {"search", "show", "tag", "untag", "tags", "list", "stats", "status", "export",
            "retry"} <= {path[0] for path, _ in tree if path}
    for path, command in tree:
        assert (command.help or "").strip(), f"labels {' '.join(path)} has no help"
        for param in command.params:
            if param.param_type_name == "option":
                assert (param.help or "").strip(), f"{path} {param.name} has no help"
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


# ---- no TensorFlow for queries -----------------------------------------------------------


@pytest.mark.parametrize("args", [["search", "cat", "--json"], ["stats"], ["list"],
                                  ["status", "--json"], ["tags"], ["show", "X"]])
def test_queries_never_import_tensorflow(db_url, library, args):
    args = [library["tabby.jpg"] if a == "X" else a for a in args]
    code = (
        "import sys\n"
        "from labels_cli.app import main\n"
        f"sys.argv = ['labels', '--db', {db_url!r}, *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as done:\n"
        f"    assert not done.code or {args[0]!r} == 'status', done.code\n"
        "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "TF False False"


def test_the_query_library_never_imports_the_model():
    code = ("import sys\n"
            "import labelsd.serve.query, labelsd.store.tags\n"
            "print(sorted(m for m in ('labelsd.model.classifier', 'tensorflow', 'keras', 'numpy')"
            " if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_model_info_on_a_machine_without_a_gpu_driver_never_imports_tensorflow(tmp_path):
    """TensorFlow cannot see a GPU without the driver, so `labels model info` says "cpu"
    without paying seconds to import it (the service's LiteRT path never imports it)."""
    from labelsd.model.device import gpu_possible

    if gpu_possible():
        pytest.skip("a GPU driver is here: asking TensorFlow is the point")
    code = ("import sys, json, io, contextlib\nfrom labels_cli.app import main\n"
            f"sys.argv = ['labels', '--db', {str(tmp_path / 'x.db')!r}, 'model', 'info', '--json']\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    try:\n        main()\n    except SystemExit as done:\n        assert not done.code\n"
            "print(json.loads(out.getvalue())['device'], 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "cpu False"
