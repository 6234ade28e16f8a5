"""The backfill under the real service (a subprocess, tests/servicekit.py): a library
labelled before embeddings existed gains every vector with no action, each once;
new photos still go first; kill -9 in the middle loses nothing and does nothing
twice; `labels status` shows the progress and `labels similar` answers after.
Random-weights InceptionV3 (speed does not depend on the weights)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

from imagegen import make_image
from labelsd.store.engine import open_store
from servicekit import Service, sha256_of, wait_for
from vectorkit import labelled_before

N = 100  # photos labelled before: the backfill has to take a while
SIZE = (160, 120)
LABELS = Path(sys.executable).with_name("labels")


def test_backfill_embeds_a_library_labelled_before_once_each_and_new_photos_go_first(
        tmp_path, weights_files):
    inbox = tmp_path / "inbox"
    staging = tmp_path / "staging"
    inbox.mkdir()
    staging.mkdir()
    old = [make_image(inbox / f"old{i:03d}.jpg", size=SIZE, seed=5000 + i) for i in range(N)]
    new = [make_image(staging / f"new{i}.jpg", size=SIZE, seed=9000 + i) for i in range(3)]
    db = tmp_path / "labels.db"
    svc = Service(tmp_path, db=db, weights=weights_files.legacy_h5, watch=[inbox], args=["--device", "cpu"])

    def embedded() -> int:
        return svc.query("SELECT count(*) FROM embeddings")[0][0]

    # 1. A library as an older labelsd left it: every photo labelled, no vectors (the
    # tables of migration 9 empty). Written as the writer writes, without a model.
    with open_store(str(db)) as store:
        labelled_before(store, old, "InceptionV3/" + "0" * 12, SIZE)
    labels_before = svc.query("SELECT sha256, rank, label, score FROM predictions ORDER BY 1, 2")
    assert embedded() == 0 and len(labels_before) == 3 * N

    try:
        # 2. the service starts: the backfill starts by itself; kill -9 once it is under way
        svc.start().wait_ready()
        wait_for(lambda: embedded() >= 8, 120, "the backfill to begin", interval=0.05, on_timeout=svc.tail)
        svc.signal(signal.SIGKILL)
        svc.wait_exit(10)
        at_kill = embedded()
        assert 0 < at_kill < N, f"{at_kill} of {N} at the kill: the test proves nothing"

        # 3. restarted: it goes on from where the database says; new photos jump the line
        svc.start().wait_ready()
        wait_for(lambda: embedded() > at_kill, 120, "the backfill to resume", interval=0.05, on_timeout=svc.tail)
        for photo in new:
            photo.rename(inbox / photo.name)
        fresh = [inbox / p.name for p in new]
        svc.wait_settled(fresh, 120, want=("done",))
        wait_for(lambda: embedded() == N + len(new), 300, "every vector", interval=0.3, on_timeout=svc.tail)
        status = json.loads(subprocess.run([str(LABELS), "--db", str(db), "status", "--json"], env=svc.env,
                                           capture_output=True, text=True, timeout=60).stdout)
        assert status["embeddings"]["done"] == status["embeddings"]["total"] == N + len(new)
        assert svc.stop() == 0, svc.tail()
    finally:
        if svc.alive():
            svc.proc.kill()

    # every content has its vector; the labels are those it had
    shas = {sha256_of(p) for p in [*old, *fresh]}
    assert {r[0] for r in svc.query("SELECT sha256 FROM embeddings")} == shas
    assert svc.query("SELECT sha256, rank, label, score FROM predictions WHERE sha256 IN "
                     f"({','.join('?' * N)}) ORDER BY 1, 2", tuple(sha256_of(p) for p in old)) == labels_before
    # nothing embedded twice: each photo at most once in the backfill's log lines (one
    # committed before the kill and not logged yet is embedded zero times after it)
    lines = re.findall(r"embedded (old\d+\.jpg) \(labelled before", svc.all_logs())
    assert len(lines) == len(set(lines)) and len(set(lines)) >= N - 8, (len(lines), len(set(lines)))
    # the new photos went first: most of the backfill was written after them
    ids = dict(svc.query("SELECT sha256, id FROM embeddings"))
    after_new = sum(ids[sha256_of(p)] > max(ids[sha256_of(f)] for f in fresh) for p in old)
    assert after_new >= (N - at_kill) // 2, (after_new, at_kill)
    # and `labels similar` answers from the file the service kept beside the database
    found = subprocess.run([str(LABELS), "--db", str(db), "similar", str(old[0]), "--json", "--limit", "3"],
                           env=svc.env, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 3 and list(tmp_path.glob("labels.db.vectors*"))
