"""Listing failed images (`labels list --status failed`, `labels serve`'s status page)
looks only where a failure can be (failed queue rows, failed contents: recordsql's
FAILED_CANDIDATES), and finds exactly what a walk over every path finds."""

from __future__ import annotations

import hashlib

from labelsd import records
from labelsd.paths import canonical_path
from labelsd.pipeline.reader import failed_outright
from labelsd.serve.reader import as_reader
from labelsd.store import contents, workqueue
from test_search import add_images


def test_failed_records_are_those_a_full_walk_finds(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = add_images(store, {"ok.jpg": [(281, 0.9)], "copy.jpg": [(281, 0.9)]},
                       sha_of={"copy.jpg": hashlib.sha256(b"ok.jpg").hexdigest()})
    # a content that fails (read, not an image), at two paths, one of them gone since
    bad = [canonical_path(n) for n in ("bad.jpg", "bad copy.jpg", "fifo.jpg")]
    workqueue.enqueue(store, bad)
    claims = {c.path: c for c in workqueue.claim(store, "test-node", 10)}
    sha = "f" * 64
    contents.record_outcomes(store, "test-node", [
        records.Outcome(claims[bad[0]], records.OutcomeKind.BAD_IMAGE, sha256=sha, size=3, mtime_ns=1,
                        error="not an image"),
        records.Outcome(claims[bad[1]], records.OutcomeKind.BAD_IMAGE, sha256=sha, size=3, mtime_ns=1,
                        error="not an image"),
        failed_outright(claims[bad[2]], "is a FIFO (named pipe), not an image file"),  # never read
    ])
    contents.mark_missing(store, [bad[1]])
    reader = as_reader(store)
    every = list(reader.record_dicts())
    walked = [r for r in every if r["status"] == "failed"]
    assert [r["path"] for r in walked] == sorted([bad[0], bad[2]])  # the gone one is missing
    assert list(reader.record_dicts(status="failed")) == walked
    assert list(reader.record_dicts(status="failed", chunk=1)) == walked  # page by page
    assert {r["path"] for r in reader.record_dicts(status="done")} == set(paths.values())
