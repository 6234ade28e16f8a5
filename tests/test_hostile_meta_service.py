"""The real `labelsd` (with `--xmp sidecar`) against hostile photo metadata and
sidecars (issue 31). One service for the module, in file order:

1. keyword bombs (2,000,000 keywords in a 51 MB PNG, 60,000 in a 1.6 MB one, 40,000
   under the XMP cap) beside 20 ordinary photos: every ordinary photo is labelled
   within its usual time (measured on 20 others first), the heartbeat never stops,
   `labels search` answers throughout;
2. what a folder can put beside a photo or in its metadata (FIFO sidecars for as
   many photos as there are decode workers, a sidecar that is a folder, a link to
   /dev/zero, a device, a 2 GB sparse file, a link to another folder's sidecar;
   EXIF that loops or overlaps, entity declarations, deep nesting, hundreds of
   namespaces, an mtime past what a 64-bit integer holds): each photo ends done or
   failed with a reason, every ordinary photo is labelled, and the service goes on;
3. SIGTERM then stops it, exit 0, within 30 s.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

import metagen
from imagegen import make_image
from servicekit import Service, wait_for
from test_metadata import make_photo

SIZE = (320, 240)
SETTLE_S = 240
STOP_S = 30
LABELS = Path(sys.executable).with_name("labels")


@pytest.fixture(scope="module")
def svc(tmp_path_factory, weights_files):
    home = Path(os.path.realpath(tmp_path_factory.mktemp("hostile-meta")))
    inbox, staging, private = home / "inbox", home / "staging", home / "private"
    for folder in (inbox, staging, private):
        folder.mkdir()
    # The biased weights make every photo a tabby well above the sidecar floor, so
    # every ordinary photo gets a sidecar (and `labels search cat` finds them).
    service = Service(home, db=home / "labels.db", weights=weights_files.biased_h5, watch=[inbox],
                      args=["--xmp", "sidecar"])
    service.inbox, service.staging, service.private = inbox, staging, private
    service.start().wait_ready()
    try:
        yield service
    finally:
        began = time.monotonic()
        code = service.stop(STOP_S + 10)
        took = time.monotonic() - began
        assert code == 0 and took < STOP_S, (code, took, service.tail())


def drop(svc, paths: list[Path]) -> list[Path]:
    """Move staged files into the inbox (one rename each: a whole file appears)."""
    moved = []
    for path in paths:
        os.rename(path, svc.inbox / path.name)
        moved.append(svc.inbox / path.name)
    return moved


def ordinary(svc, prefix: str, n: int, seed: int) -> list[Path]:
    return [make_image(svc.staging / f"{prefix}{i:02d}.jpg", size=SIZE, seed=seed + i) for i in range(n)]


def heartbeat_age(svc) -> float | None:
    rows = svc.query("SELECT heartbeat_at FROM nodes WHERE stopped_at IS NULL")
    if not rows or rows[0][0] is None:
        return None
    beat = datetime.fromisoformat(str(rows[0][0]))
    beat = beat if beat.tzinfo else beat.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - beat).total_seconds()


class Watchman(threading.Thread):
    """Samples the heartbeat's age and runs `labels search cat` over and over."""

    def __init__(self, svc):
        super().__init__(daemon=True)
        self.svc = svc
        self.stop = threading.Event()
        self.ages: list[float] = []
        self.searches: list[tuple[int, float, str]] = []

    def run(self):
        while not self.stop.is_set():
            age = heartbeat_age(self.svc)
            if age is not None:
                self.ages.append(age)
            began = time.monotonic()
            done = subprocess.run([str(LABELS), "--db", str(self.svc.db), "search", "cat", "--json"],
                                  capture_output=True, text=True, timeout=60, env=self.svc.env)
            self.searches.append((done.returncode, time.monotonic() - began, done.stderr[-300:]))
            self.stop.wait(0.5)


def sparse_file(path: Path) -> None:
    with open(path, "wb") as fh:
        fh.truncate(2 << 30)  # 2 GiB, no blocks on disk


def test_keyword_bombs_cost_no_ordinary_photo_its_usual_time(svc):
    first = ordinary(svc, "usual", 20, seed=0)
    began = time.monotonic()
    svc.wait_settled(drop(svc, first), SETTLE_S)
    usual = time.monotonic() - began

    bombs = [metagen.png_with_xmp(svc.staging / "bomb2m.png", metagen.keyword_bomb_xmp(2_000_000), seed=1),
             metagen.png_with_xmp(svc.staging / "bomb60k.png", metagen.keyword_bomb_xmp(60_000), seed=2),
             metagen.png_with_xmp(svc.staging / "nearcap.png", metagen.xmp_packet(
                 [f"k{i}" for i in range(40_000)]), seed=3)]
    second = ordinary(svc, "after", 20, seed=100)
    watchman = Watchman(svc)
    watchman.start()
    try:
        began = time.monotonic()
        bombs = drop(svc, bombs)
        statuses = svc.wait_settled(drop(svc, second), SETTLE_S)
        took = time.monotonic() - began
        svc.wait_settled(bombs, SETTLE_S)
    finally:
        watchman.stop.set()
        watchman.join(90)

    assert set(statuses.values()) == {"done"}, statuses
    assert took < 2 * usual + 20, (took, usual)  # its usual time, give or take a loaded machine
    assert [svc.statuses()[str(b)] for b in bombs] == ["done"] * 3
    assert len(svc.tags_of(bombs[2])) == 256 and svc.tags_of(bombs[0]) == []
    assert watchman.ages and max(watchman.ages) < 10, watchman.ages  # beats every 2 s
    assert watchman.searches and all(code == 0 and s < 30 for code, s, _ in watchman.searches), \
        watchman.searches
    log = svc.log()
    assert "heartbeat failed" not in log and "retrying in" not in log, svc.tail()
    assert log.count("more keyword(s) than the 256 imported as tags") == 1


def test_hostile_sidecars_and_metadata_cost_no_ordinary_photo(svc):
    workers = len(os.sched_getaffinity(0))  # the service's decode workers (the default)
    staged: list[Path] = []
    sidecars: dict[str, object] = {}  # photo name -> what to put where its sidecar goes

    def photo(name: str, sidecar=None, maker=None) -> None:
        path = svc.staging / name
        (maker or (lambda p: make_photo(p, iptc=("beach",), size=SIZE, seed=len(staged))))(path)
        staged.append(path)
        if sidecar is not None:
            sidecars[name] = sidecar

    secret = svc.private / "secret.jpg.xmp"
    secret.write_text(metagen.xmp_packet(["secret keyword"]).decode())
    for n in range(workers):
        photo(f"trap{n}.jpg", sidecar=os.mkfifo)
    photo("folder.jpg", sidecar=os.mkdir)
    photo("zero.jpg", sidecar=lambda p: os.symlink("/dev/zero", p))
    photo("linked.jpg", sidecar=lambda p: os.symlink(secret, p))
    photo("sparse.jpg", sidecar=sparse_file)
    if os.geteuid() == 0:
        photo("device.jpg", sidecar=lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 5)))
    photo("loop.jpg", maker=lambda p: metagen.jpeg_with_segments(
        p, [metagen.exif_segment(metagen.looping_exif())], size=SIZE))
    photo("overlap.png", maker=lambda p: metagen.png_with_chunks(
        p, [(b"eXIf", metagen.overlapping_exif())], size=SIZE))
    photo("laughs.jpg", maker=lambda p: metagen.jpeg_with_segments(
        p, [metagen.xmp_segment(metagen.xmp_packet(["&lol9;"], doctype=metagen.billion_laughs()))], size=SIZE))
    photo("deep.png", maker=lambda p: metagen.png_with_xmp(p, metagen.deep_xmp(100_000), size=SIZE))
    photo("crowded.png", maker=lambda p: metagen.png_with_xmp(
        p, metagen.xmp_packet(["w"], namespaces=500), size=SIZE))
    photo("future.jpg")  # its mtime is past what a 64-bit integer of nanoseconds holds
    os.utime(svc.staging / "future.jpg", ns=(10**19, 10**19))  # kept by the rename

    # The sidecars first (a FIFO is never renamed, so make them in place), then the photos.
    for name, maker in sidecars.items():
        maker(svc.inbox / (name + ".xmp"))
    kinds = {name: os.lstat(svc.inbox / (name + ".xmp")).st_mode for name in sidecars}
    hostile = drop(svc, staged)
    innocent = drop(svc, ordinary(svc, "innocent", 5, seed=300))

    statuses = svc.wait_settled([*hostile, *innocent], SETTLE_S)
    assert all(statuses[str(p)] == "done" for p in innocent), statuses
    errors = dict(svc.query("SELECT path, last_error FROM queue WHERE state = 'failed'"))
    for path in hostile:
        assert statuses[str(path)] == "done" or errors.get(str(path)), (path, statuses[str(path)])
    assert statuses[str(svc.inbox / "future.jpg")] == "failed"
    assert errors[str(svc.inbox / "future.jpg")].startswith("cannot store its result:")
    assert all(statuses[str(svc.inbox / f"trap{n}.jpg")] == "done" for n in range(workers))
    assert "secret keyword" not in svc.tags_of(svc.inbox / "linked.jpg")
    assert svc.tags_of(svc.inbox / "zero.jpg") == ["beach"]
    for name, mode in kinds.items():  # none followed, replaced or written to
        assert os.lstat(svc.inbox / (name + ".xmp")).st_mode == mode, name
    assert secret.read_text() == metagen.xmp_packet(["secret keyword"]).decode()
    assert not [p.name for p in svc.inbox.iterdir() if p.name.endswith(".part")]
    assert svc.alive()
    # Sidecars written for the others are whole XMP packets.
    wait_for(lambda: (svc.inbox / "innocent04.jpg.xmp").exists(), 60, "the last sidecar",
             on_timeout=svc.tail)
    for written in svc.inbox.glob("*.xmp"):
        if written.name[:-4] in sidecars or not written.is_file():
            continue
        assert metagen.whole_packet(written.read_bytes()), written.name
    shutil.rmtree(svc.inbox / "folder.jpg.xmp")
