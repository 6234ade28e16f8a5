"""The real `labelsd` while its SQLite database misbehaves (issue 15, items 2, 3
and 8; issue 16): another process holds the write lock for 45 s, the disk
holding the database fills up, a second service starts on the same file, the
file is deleted under the service. Each ends with every photo labelled exactly
once, without a restart (except the deletion, which must end the service so
that systemd starts it again), and `PRAGMA integrity_check` ok.

One service, in file order. Its database lives on a small tmpfs mounted for the
module (root only), so that the disk can be filled; without root it lives in
tmp_path and the full-disk test skips.
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from imagegen import make_image
from servicekit import Service
from test_db_faults import fill  # one way to fill a disk

SIZE = (320, 240)
LOCK_HOLD_S = 45  # the scenario itself: how long another process keeps the write lock
SETTLE_S = 180  # with the 45 s lock, under pytest-timeout's 300 s


def real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def labelled_once(log: str, name: str) -> int:
    return log.count(f"labeled {name}:")


def _mount_tmpfs(folder: Path, size: str) -> str | None:
    """Mount a tmpfs on `folder`; None when done, else why not."""
    if os.geteuid() != 0:
        return "mounting a small filesystem needs root"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(folder)], capture_output=True, text=True)
    return None if done.returncode == 0 else f"cannot mount a tmpfs: {done.stderr.strip()}"


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, weights_files):
    home = real(tmp_path_factory.mktemp("faults"))
    inbox, disk = home / "inbox", home / "disk"
    inbox.mkdir()
    disk.mkdir()
    no_disk = _mount_tmpfs(disk, "24m")
    svc = Service(home, db=disk / "labels.db", weights=weights_files.legacy_h5, watch=[inbox])
    svc.inbox, svc.disk, svc.no_disk, svc.staging = inbox, disk, no_disk, home / "staging"
    svc.staging.mkdir()
    svc.start().wait_ready()
    try:
        yield svc
    finally:
        svc.stop()
        if no_disk is None:
            subprocess.run(["umount", "-l", str(disk)], check=False)


def _photos(svc, folder: str, n: int, seed: int) -> list[Path]:
    staged = svc.staging / folder
    staged.mkdir()
    return [make_image(staged / f"{folder}-{i:02d}.jpg", size=SIZE, seed=seed + i)
            for i in range(n)]


def _drop(svc, staged: list[Path], folder: str) -> list[Path]:
    target = svc.inbox / folder
    target.mkdir(exist_ok=True)
    for src in staged:
        shutil.copy(src, target / src.name)
    return [target / p.name for p in staged]


def _labelled_exactly_once(svc, dests: list[Path]) -> None:
    statuses = svc.wait_settled(dests, SETTLE_S)
    assert set(statuses.values()) == {"done"}, statuses
    log = svc.all_logs()
    counts = {p.name: labelled_once(log, p.name) for p in dests}
    odd = {name: n for name, n in counts.items() if n != 1}
    # (seen once under heavy load, never reproduced: say what each odd one went through)
    assert odd == {}, (odd, [line for line in log.splitlines() if any(name in line for name in odd)][:40])
    assert svc.integrity() == "ok"


def test_photos_arriving_during_a_45s_write_lock_are_labelled_once_it_goes(faulty):
    svc = faulty
    staged = _photos(svc, "locked", 20, seed=100)
    holder = sqlite3.connect(svc.db, isolation_level=None, timeout=60)
    holder.execute("BEGIN EXCLUSIVE")
    locked_at = time.monotonic()
    try:
        dests = _drop(svc, staged, "locked")
        svc.wait_log("could not record file changes", LOCK_HOLD_S + 30)
        time.sleep(max(0.0, LOCK_HOLD_S - (time.monotonic() - locked_at)))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert time.monotonic() - locked_at >= LOCK_HOLD_S
    _labelled_exactly_once(svc, dests)
    assert "the database answers again" in svc.log()
    assert svc.alive()


def test_photos_arriving_while_the_disk_is_full_are_labelled_once_it_has_room(faulty):
    svc = faulty
    if svc.no_disk:
        pytest.skip(svc.no_disk)
    staged = _photos(svc, "full", 20, seed=200)
    conn = sqlite3.connect(svc.db, timeout=60)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no spare WAL room to write into
    conn.close()
    filler = fill(svc.disk)
    try:
        dests = _drop(svc, staged, "full")
        svc.wait_log("is full; free some space", 120)
        assert "busy" not in "\n".join(line for line in svc.log().splitlines() if "full" in line)
    finally:
        filler.unlink()
    _labelled_exactly_once(svc, dests)
    assert svc.alive()


def test_a_second_service_on_the_same_file_is_refused_with_one_line(faulty):
    svc = faulty
    second = Service(svc.workdir, db=svc.db, weights=Path(svc.argv[svc.argv.index("--weights") + 1]),
                     watch=[svc.inbox], name="second")
    second.start()
    assert second.wait_exit(120) == 1, second.tail()
    errors = [line for line in second.log().splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "already serves" in errors[0] and "PostgreSQL" in errors[0], \
        second.tail()
    assert "Traceback" not in second.log()
    assert svc.alive()


def test_the_database_deleted_under_the_service_ends_it_and_a_restart_fills_the_new_one(faulty):
    svc = faulty
    before = _drop(svc, _photos(svc, "before", 3, seed=300), "before")
    svc.wait_settled(before, SETTLE_S)
    gc.collect()  # servicekit's read connections, kept by reference cycles, hold the old WAL
    svc.db.unlink()
    assert svc.wait_exit(60) != 0, svc.tail()
    assert "ERROR" in svc.log() and "was deleted while labelsd was running" in svc.log()
    svc.start().wait_ready()  # what systemd's Restart=on-failure does
    everything = [p for p in svc.inbox.rglob("*.jpg")]
    statuses = svc.wait_settled(everything, SETTLE_S)
    assert set(statuses.values()) == {"done"}
    assert svc.integrity() == "ok"
