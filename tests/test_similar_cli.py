"""`labels similar` and `labels duplicates` through the real app (CliRunner) over a
library with stored vectors (no model: vectorkit writes them through the writer's
own record_outcomes), and `labels status`' embedding progress. The real model's
vectors of real photos are tests/test_similar_real.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from labels_cli.app import app
from labelsd.records import Outcome, OutcomeKind
from labelsd.store import contents, workqueue
from labelsd.vectors import codec
from vectorkit import MODEL, fill

runner = CliRunner()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """PostgreSQL's vector files go to the user's cache: this test's, not the developer's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def labels(db_url, *args):
    return runner.invoke(app, ["--db", db_url, *args])


@pytest.fixture
def library(store, tmp_path):
    """40 photos (4 of them one picture: a base and three near-copies whose features are
    the base's with a little noise), an exact copy of one of them, and 3 labelled photos
    with no vector yet."""
    rng = np.random.default_rng(5)
    features = (np.maximum(rng.standard_normal((40, 1280)) - 0.2, 0) ** 2).astype(np.float32)
    features[1:4] = features[0] * rng.uniform(0.97, 1.03, (3, features.shape[1]))
    root = tmp_path / "photos"
    paths = fill(store, root, codec.encode(features))
    # an exact copy: a second path to the content of img00007
    with store.write() as session:
        session.execute(text("INSERT INTO paths (path, sha256, size, mtime_ns, first_seen, last_seen, missing) "
                             "SELECT :p, sha256, size, mtime_ns, first_seen, last_seen, missing FROM paths "
                             "WHERE path = :src"), {"p": f"{root}/copy-of-7.jpg", "src": paths[7]})
    later = fill(store, root, None, n=3, start=100)
    return paths, later, root


def ok(result, status=0) -> str:
    assert result.exit_code == status, (result.exit_code, result.output, result.exception)
    return result.stdout


def test_similar_lists_the_near_copies_first_with_their_scores(db_url, library):
    paths, _, root = library
    found = json.loads(ok(labels(db_url, "similar", paths[0], "--json", "--limit", "5")))
    assert [r["path"] for r in found[:3]] == paths[1:4] or {r["path"] for r in found[:3]} == set(paths[1:4])
    assert all(r["similarity"] > 0.95 for r in found[:3]) and found[3]["similarity"] < 0.9
    assert paths[0] not in {r["path"] for r in found}  # the photo itself is left out
    assert {"path", "sha256", "labels", "tags", "similarity"} <= set(found[0])
    assert found == sorted(found, key=lambda r: -r["similarity"]) and len(found) == 5
    assert ok(labels(db_url, "similar", paths[0], "--paths", "--limit", "3")).split() == [r["path"] for r in found[:3]]
    table = ok(labels(db_url, "similar", paths[0], "--limit", "2"))
    assert table.splitlines()[0].strip().startswith("0.9") and "tabby" in table
    # the exact copy scores 1 against its original
    copies = json.loads(ok(labels(db_url, "similar", paths[7], "--json", "--limit", "1")))
    assert copies[0]["path"] == f"{root}/copy-of-7.jpg" and copies[0]["similarity"] == 1.0


def test_similar_says_when_a_photo_has_no_embedding_yet(db_url, store, library):
    _, later, _ = library
    result = labels(db_url, "similar", later[0])
    assert result.exit_code == 75, result.output  # EX_TEMPFAIL: try again later
    assert "has no embedding yet" in result.stderr and "labels status" in result.stderr
    assert result.stdout == ""
    # a photo that failed to decode never gets one: a plain error, not "try again later"
    broken = str(library[2] / "broken.jpg")
    workqueue.enqueue(store, [broken])
    contents.record_outcomes(store, "t", [Outcome(workqueue.claim(store, "t", 1)[0], OutcomeKind.BAD_IMAGE,
                                                  sha256="e" * 64, size=3, error="not an image")])
    result = labels(db_url, "similar", broken)
    assert result.exit_code == 1 and "failed to decode" in result.stderr, result.output


def test_similar_refuses_a_file_that_is_not_an_image_before_loading_any_model(db_url, library, tmp_path,
                                                                              monkeypatch):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("shopping list")
    monkeypatch.setattr("labelsd.model.runtime.load_model", lambda *a, **k: pytest.fail("model loaded"))
    result = labels(db_url, "similar", str(not_image))
    assert result.exit_code == 1 and "not an image" in result.stderr.lower(), result.output
    result = labels(db_url, "similar", str(tmp_path / "nowhere.jpg"))
    assert result.exit_code == 1 and "no such file" in result.stderr
    os.mkfifo(tmp_path / "pipe.jpg")  # refused, not read (a FIFO with no writer would block)
    result = labels(db_url, "similar", str(tmp_path / "pipe.jpg"))
    assert result.exit_code == 1 and "FIFO" in result.stderr, result.output
    result = labels(db_url, "similar", str(tmp_path))
    assert result.exit_code == 1 and "a folder, not an image" in result.stderr, result.output


def test_similar_leaves_missing_photos_out_unless_asked(db_url, store, library):
    paths, _, _ = library
    contents.mark_missing(store, [paths[1]])
    found = [r["path"] for r in json.loads(ok(labels(db_url, "similar", paths[0], "--json", "--limit", "3")))]
    assert paths[1] not in found and len(found) == 3
    found = [r["path"] for r in json.loads(ok(labels(db_url, "similar", paths[0], "--json", "--limit", "3",
                                                     "--include-missing")))]
    assert paths[1] in found


def test_duplicates_groups_near_copies_and_marks_exact_copies(db_url, library):
    paths, _, root = library
    groups = json.loads(ok(labels(db_url, "duplicates", "--json")))
    assert [sorted(m["path"] for m in g["members"]) for g in groups] == [
        sorted(paths[:4]), sorted([paths[7], f"{root}/copy-of-7.jpg"])]
    near, exact = groups
    assert (near["count"], near["exact"], exact["exact"]) == (4, False, True)
    assert all(m["exact_copy"] for m in exact["members"]) and not any(m["exact_copy"] for m in near["members"])
    assert near["members"][0]["similarity"] == 1.0 and all(m["similarity"] > 0.95 for m in near["members"])
    assert {"path", "sha256", "bytes", "width", "height", "similarity", "exact_copy"} <= set(near["members"][0])
    text = ok(labels(db_url, "duplicates"))
    assert "group 1: 4 near-duplicates" in text and "group 2: 2 exact copies" in text
    assert json.loads(ok(labels(db_url, "duplicates", "--json", "--threshold", "1"))) == [exact]


@pytest.mark.parametrize("value", ["1.5", "-0.1", "x"])
def test_duplicates_refuses_a_threshold_outside_0_to_1(db_url, library, value):
    result = labels(db_url, "duplicates", "--threshold", value)
    assert result.exit_code == 2 and "--threshold" in result.output


def test_a_server_librarys_vector_file_lives_in_the_users_cache(db_url, library, tmp_path):
    paths, _, _ = library
    ok(labels(db_url, "similar", paths[0], "--limit", "1"))
    cached = list((tmp_path / "xdg-cache").rglob("*.vectors*"))
    beside = list((tmp_path / "db").glob("labels.db.vectors*"))
    assert (len(cached), len(beside)) == ((1, 0) if "://" in db_url else (0, 1))


def test_status_says_how_far_the_library_is_embedded(db_url, library):
    result = labels(db_url, "status", "--json")
    assert result.exit_code == 3  # no service runs
    assert json.loads(result.stdout)["embeddings"] == {"model": MODEL, "done": 40, "total": 43}
    assert "embedded for `labels similar`: 40 of 43" in labels(db_url, "status").stdout


@pytest.mark.parametrize("command", ["similar", "duplicates"])
def test_similar_and_duplicates_never_import_tensorflow(db_url, library, command):
    """Only a photo outside the library needs the model: a stored vector is read as is."""
    paths, _, _ = library
    args = ["--db", db_url, command, *([paths[0]] if command == "similar" else []), "--json"]
    code = ("import sys\n"
            "from labels_cli.app import main\n"
            f"sys.argv = ['labels', *{args!r}]\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as done:\n"
            "    assert not done.code, done.code\n"
            "print('TF', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "TF False False"
