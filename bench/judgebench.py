"""What a person's judgements cost (issue 27), on SQLite, with the `labels` command
itself (a subprocess each, start-up included):

  (b) `labels search cat --json` on a synthetic library of --images photos
      (bench/query.py's builder, the library of bench/fleet.py's part d), then on
      a copy in which 1% of the photos carry a rejection of one of their labels;
      median wall and CPU of --runs runs each, interleaved. Goal: within 10%.
  (a) on that copy, --judged photos (default 10,000) also carry "toilet tissue"
      as their third label: `labels confirm --search 'toilet tissue' -l 'toilet
      tissue'` confirms them all, then `labels reject --search ...` rejects them
      all (reject replaces a confirmation). Goal: each under 5 s.

    .venv/bin/python bench/judgebench.py [--images 1000000] [--judged 10000] [--runs 5]
                                         [--db FILE]

--db reuses (or builds) the library there; the copies go beside it and are kept.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from labelsd.model.taxonomy import class_by_label
from labelsd.store.engine import open_store
from query import SUBPROCESS_ENV, build, labels_cli, median_time  # bench/: the script's own folder

JUDGED_LABEL = "toilet tissue"


def add_rejections(db: str, share: float = 0.01, seed: int = 27) -> int:
    """Reject one label (rank 1, 2 or 3 at random) on `share` of the library's photos."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).isoformat(sep=" ")
    with sqlite3.connect(db) as conn:
        shas = [row[0] for row in conn.execute("SELECT sha256 FROM contents ORDER BY sha256")]
        picked = {sha: rng.randint(1, 3) for sha in rng.sample(shas, int(len(shas) * share))}
        rows = []
        wanted = sorted(picked)
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            for sha, rank, index, wnid, label in conn.execute(
                    "SELECT sha256, rank, class_index, wnid, label FROM predictions WHERE sha256 IN "
                    f"({', '.join('?' * len(part))})", part):
                if picked[sha] == rank:
                    rows.append((sha, index, wnid, label, "rejected", "cli", now))
        conn.executemany("INSERT INTO judgements (sha256, class_index, wnid, label, verdict, source, "
                         "judged_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("ANALYZE")
    return len(rows)


def give_label(db: str, count: int, label: str = JUDGED_LABEL, seed: int = 28) -> int:
    """`count` photos whose labels lack `label` get it as their third label, at 11%: above
    search's default floor (search_min_score, 10%), so `labels search` finds them all."""
    cls = class_by_label(label)
    rng = random.Random(seed)
    with sqlite3.connect(db) as conn:
        shas = [row[0] for row in conn.execute(
            "SELECT c.sha256 FROM contents c WHERE NOT EXISTS (SELECT 1 FROM predictions r "
            "WHERE r.sha256 = c.sha256 AND r.class_index = ?) ORDER BY c.sha256", (cls.index,))]
        chosen = rng.sample(shas, min(count, len(shas)))
        conn.executemany("UPDATE predictions SET class_index = ?, wnid = ?, label = ?, score = 0.11 "
                         "WHERE sha256 = ? AND rank = 3",
                         [(cls.index, cls.wnid, cls.label, sha) for sha in chosen])
        conn.execute("ANALYZE")
    return len(chosen)


def copy_of(db: str, suffix: str) -> str:
    target = str(Path(db).with_name(Path(db).stem + suffix + ".db"))
    if Path(target).exists():
        os.remove(target)
    with sqlite3.connect(db) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--judged", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", help="reuse (or build) the library in this SQLite file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="labels-judge-") as tmp:
        SUBPROCESS_ENV["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        db = args.db or os.path.join(tmp, "library.db")
        if not Path(db).exists():
            build(db, args.images)
        open_store(db).close()  # a library from an older labelsd is migrated once, here
        judged = copy_of(db, "-judged")
        rejected = add_rejections(judged)
        print(f"(b) {rejected:,} photos of {args.images:,} carry a rejection (1%) in {judged}")

        search = {"before": [], "after": []}
        for where in (db, judged):
            labels_cli("--db", where, "search", "cat", "--json")  # warm: bytecode, page cache
        for _ in range(args.runs):  # interleaved: a busy moment hits both alike
            for name, where in (("before", db), ("after", judged)):
                search[name].append(median_time(
                    lambda where=where: labels_cli("--db", where, "search", "cat", "--json"), 1)[:2])
        (wall0, cpu0), (wall1, cpu1) = ([sorted(x)[len(x) // 2] for x in zip(*runs)]
                                        for runs in (search["before"], search["after"]))
        print(f"(b) labels search cat --json at {args.images:,} images: {wall0:.3f} s wall / "
              f"{cpu0:.3f} s CPU without rejections, {wall1:.3f} s / {cpu1:.3f} s with 1%: "
              f"{wall1 / wall0:.2f}x wall, {cpu1 / cpu0:.2f}x CPU (goal: within 1.10x)")

        given = give_label(judged, args.judged)
        for verb in ("confirm", "reject"):
            started = time.perf_counter()
            done = labels_cli("--db", judged, verb, "--search", JUDGED_LABEL, "-l", JUDGED_LABEL)
            took = time.perf_counter() - started
            changed = done.stdout.count("\n")
            print(f"(a) labels {verb} --search '{JUDGED_LABEL}': {changed:,} photos in {took:.2f} s "
                  f"({given:,} carry the label; goal: under 5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
