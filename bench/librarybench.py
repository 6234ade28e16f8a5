"""Part (d) of bench/fleet.py: the `labels` commands a person runs (search, status,
stats, export), timed as CLI subprocesses over a synthetic library of a given size
(bench/query.py's builder), and beside it a copy whose photos carry keywords."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from benchkit import labels_peak
from labelsd.store.engine import open_store

LIBRARY_BEFORE = {"search cat": 1.25, "status": 0.18, "stats": 3.42}  # s at 1M images, issue 20


def library_queries(db: str, images: int) -> None:
    """`labels search cat`, `status`, `stats` and `export` (CLI subprocesses) over a
    synthetic library (bench/query.py's builder), with export's peak memory. A
    library built by an older labelsd is migrated first (the service would)."""
    from query import build

    if not Path(db).exists():
        build(db, images)
    started = time.perf_counter()
    open_store(db).close()
    print(f"(d) opening the library took {time.perf_counter() - started:.1f} s (a library "
          "from an older labelsd is migrated then, once, as the service would)")

    def cli(*args: str, db: str = db) -> tuple[float, float, bytes]:
        """Seconds, peak RSS (MB) and what one `labels` command printed."""
        took, peak_kib, printed = labels_peak(db, *args, ok=(0, 3))  # status exits 3: no service
        return took, peak_kib / 1024, printed

    startup, base_mb, _ = sorted(cli("--help") for _ in range(3))[1]
    for name, args, goal in (("search cat", ("search", "cat", "--json"), "< 0.5 s"),
                             ("status", ("status", "--json"), "< 0.5 s"),
                             ("stats", ("stats", "--json"), "< 2 s")):
        took, _, printed = sorted(cli(*args) for _ in range(3))[1]
        hits = printed.count(b'"path"')
        what = f"; {hits:,} images, {len(printed) / 1e6:.1f} MB of JSON" if hits else ""
        print(f"(d) labels {name} at {images:,} images: {took:.2f} s, {took - startup:.2f} s "
              f"beyond the CLI's start-up ({startup:.2f} s{what}; goal {goal}; "
              f"was {LIBRARY_BEFORE[name]:.2f} s at 1,000,000)")
    # A real file: `-o` replaces a regular file atomically (a device is written in place).
    took, peak_mb, _ = cli("export", "--format", "json", "-o", str(Path(db).with_suffix(".json")))
    print(f"(d) labels export at {images:,} images: {took:.1f} s, peak RSS {peak_mb:.0f} MB "
          f"(the CLI alone {base_mb:.0f} MB; goal: flat memory; was 33.7 s, 53 MB at 1,000,000)")

    # Beside the goal's library, the same one whose photos carried two keywords each
    # (imported tags, 4,000 distinct), as libraries from other photo programs do: what
    # matching and printing tags costs a search, and counting them costs stats.
    tagged = Path(db).with_name(Path(db).stem + "-keywords.db")
    if not tagged.exists():
        from query import add_keywords

        with sqlite3.connect(db) as source, sqlite3.connect(tagged) as copy:
            source.backup(copy)
        print(f"(d') {add_keywords(str(tagged)):,} keywords added to a copy -> {tagged}")
    for name, args in (("search cat", ("search", "cat", "--json")), ("stats", ("stats", "--json"))):
        took, _, printed = sorted(cli(*args, db=str(tagged)) for _ in range(3))[1]
        hits = printed.count(b'"path"')
        what = f"; {hits:,} images, {len(printed) / 1e6:.1f} MB of JSON" if hits else ""
        print(f"(d') labels {name} at {images:,} images with two keywords each: {took:.2f} s "
              f"(not the goal's library{what})")
