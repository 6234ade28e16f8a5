"""The real `labelsd`, started as a subprocess on a folder in tmp_path, with the
random-weights InceptionV3 and a SQLite file: every image that lands is labelled
exactly once, through bursts, crashes, stops and half-written files.

One long-lived service (`inbox_service`) serves the checks that do not need a
restart, in file order; the crash test runs its own service three times. Waits
poll the database or the log with deadlines (tests/servicekit.py).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from imagegen import make_image, make_not_an_image, make_truncated_jpeg, make_truncated_png
from servicekit import LABELSD, FakeInotify, Service, cpu_idle, service_env, sha256_of, wait_for

SIZE = (320, 240)
SETTLE_S = 60  # deadline for a handful of images
IGNORED = [".hidden.jpg", "._x.jpg", "x.jpg.part", "notes.txt"]


def real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def make_batch(folder: Path, n: int, *, first_seed: int, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [make_image(folder / f"{prefix}{i:03d}.jpg", size=SIZE, seed=first_seed + i)
            for i in range(n)]


def labelled_once(log: str, name: str) -> int:
    return log.count(f"labeled {name}:")


@pytest.fixture(scope="module")
def inbox_service(tmp_path_factory, weights_files):
    home = real(tmp_path_factory.mktemp("svc"))
    inbox = home / "inbox"
    inbox.mkdir()
    svc = Service(home, db=home / "db" / "labels.db", weights=weights_files.legacy_h5,
                  watch=[inbox])
    svc.inbox = inbox
    svc.staging = home / "staging"
    svc.staging.mkdir()
    svc.start().wait_ready()
    yield svc
    assert svc.stop() == 0, svc.tail()


# --------------------------------------------------------------------------- one service


def test_photos_of_several_formats_get_labels_broken_ones_a_reason(inbox_service):
    svc, staging = inbox_service, inbox_service.staging / "formats"
    staging.mkdir()
    outside = svc.staging / "outside"
    outside.mkdir()
    make_image(outside / "secret.jpg", size=SIZE, seed=9)
    # first, so their events are handled before the images': never recorded
    for name in IGNORED:
        (svc.inbox / name).write_bytes(b"\xff\xd8 not really an image")
    (svc.inbox / "link-to-outside").symlink_to(outside, target_is_directory=True)
    (svc.inbox / "link.jpg").symlink_to(outside / "secret.jpg")
    good = [make_image(staging / f"photo.{ext}", size=SIZE, seed=10 + i)
            for i, ext in enumerate(["jpg", "png", "webp", "gif", "bmp", "tiff", "heic"])]
    good.append(make_image(staging / "gray.png", size=SIZE, mode="L", seed=20))
    broken = [make_not_an_image(staging / "not-a-photo.jpg"),
              make_truncated_jpeg(staging / "cut.jpg"),
              make_truncated_png(staging / "cut.png", keep=0.3)]
    for src in good + broken:
        shutil.copy(src, svc.inbox / src.name)

    statuses = svc.wait_settled([svc.inbox / p.name for p in good + broken], SETTLE_S)
    assert [statuses[str(svc.inbox / p.name)] for p in good] == ["done"] * len(good)
    assert [statuses[str(svc.inbox / p.name)] for p in broken] == ["failed"] * len(broken)
    errors = dict(svc.query("SELECT p.path, c.error FROM paths p JOIN contents c "
                            "ON c.sha256 = p.sha256 WHERE c.status = 'failed'"))
    for p in broken:
        assert errors[str(svc.inbox / p.name)], f"{p.name} failed without a reason"
    assert svc.predictions_per_content() == {sha256_of(p): 3 for p in good}

    recorded = set(svc.statuses())
    assert not [n for n in IGNORED if str(svc.inbox / n) in recorded]
    assert not [p for p in recorded if "secret" in p or "link" in p]  # symlinks not followed
    assert svc.alive(), svc.tail()


def test_burst_of_300_images_each_labelled_exactly_once(inbox_service):
    svc = inbox_service
    staged = make_batch(svc.staging / "burst", 300, first_seed=1000)
    target = svc.inbox / "burst"
    target.mkdir()  # the new folder is watched as it appears
    for src in staged:
        shutil.copy(src, target / src.name)
    dests = [target / p.name for p in staged]

    statuses = svc.wait_settled(dests, 300)
    assert set(statuses.values()) == {"done"}
    shas = {sha256_of(p) for p in dests}
    assert len(shas) == 300
    per_content = svc.predictions_per_content()
    assert {per_content.get(s) for s in shas} == {3}
    burst_paths = svc.query("SELECT path FROM paths WHERE path LIKE ?", (f"{target}/%",))
    assert len(burst_paths) == 300
    log = svc.log()
    assert [n for n in (p.name for p in dests) if labelled_once(log, n) != 1] == []
    assert svc.query("SELECT count(*) FROM queue")[0][0] == 0
    assert svc.alive()


def test_half_written_files_are_read_only_once_complete(inbox_service):
    svc = inbox_service
    data = make_image(svc.staging / "slow.jpg", size=(640, 480), seed=77, quality=95).read_bytes()
    renamed = make_image(svc.staging / "download.jpg", size=SIZE, seed=78).read_bytes()
    slow = svc.inbox / "slow.jpg"
    chunk = len(data) // 6 + 1
    with open(slow, "wb") as out:  # one writer, several seconds, pauses between chunks
        for i, start in enumerate(range(0, len(data), chunk)):
            out.write(data[start:start + chunk])
            out.flush()
            if i == 1:  # meanwhile, a download under a temporary name, then renamed
                partial = svc.inbox / "download.jpg.part"
                partial.write_bytes(renamed)
                partial.rename(svc.inbox / "download.jpg")
            time.sleep(0.7)  # the writer's pace, not a wait for the service

    svc.wait_settled([slow, svc.inbox / "download.jpg"], SETTLE_S, want=("done",))
    assert svc.path_row(slow)[0] == sha256_of(slow)
    assert svc.path_row(svc.inbox / "download.jpg")[0] == sha256_of(svc.inbox / "download.jpg")
    log = svc.log()
    assert labelled_once(log, "slow.jpg") == 1 and "failed slow.jpg" not in log
    assert labelled_once(log, "download.jpg") == 1
    assert svc.path_row(svc.inbox / "download.jpg.part") is None


def test_rename_delete_folder_moved_in_and_copy(inbox_service):
    svc = inbox_service
    (svc.inbox / "sub").mkdir()  # watched well before anything is moved into it
    a, b, c = (make_image(svc.inbox / f"{n}.jpg", size=SIZE, seed=s)
               for n, s in (("keep", 501), ("gone", 502), ("orig", 503)))
    svc.wait_settled([a, b, c], SETTLE_S, want=("done",))
    sha_a = svc.path_row(a)[0]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(svc.db, timeout=30) as conn:  # a tag, as `labels tag` stores it
        conn.execute("INSERT INTO tags (sha256, tag_key, tag, created_at) VALUES (?, ?, ?, ?)",
                     (sha_a, "vacation", "Vacation", now))

    moved_a = svc.inbox / "sub" / "renamed.jpg"
    a.rename(moved_a)
    b.unlink()
    album = make_batch(svc.staging / "album", 3, first_seed=600, prefix="album")[0].parent
    album.rename(svc.inbox / "album")  # a folder with files already inside
    copy = svc.inbox / "copy-of-orig.jpg"
    shutil.copy(c, copy)

    album_files = sorted((svc.inbox / "album").iterdir())
    svc.wait_settled([moved_a, copy, *album_files], SETTLE_S, want=("done",))
    wait_for(lambda: svc.statuses().get(str(b)) == "missing", SETTLE_S, "gone.jpg missing")
    assert svc.path_row(a) is None
    assert svc.path_row(moved_a)[0] == sha_a and svc.tags_of(moved_a) == ["Vacation"]
    assert svc.path_row(b)[0] is not None  # labels kept for a missing file
    assert svc.predictions_per_content()[svc.path_row(b)[0]] == 3
    assert svc.path_row(copy)[0] == svc.path_row(c)[0]
    log = svc.log()
    assert "linked copy-of-orig.jpg" in log and labelled_once(log, "copy-of-orig.jpg") == 0
    assert labelled_once(log, "renamed.jpg") == 0  # a rename is not a new image
    assert svc.alive()


def test_idle_service_uses_almost_no_cpu(inbox_service):
    svc = inbox_service
    wait_for(lambda: svc.query("SELECT count(*) FROM queue")[0][0] == 0, SETTLE_S, "empty queue")
    used = cpu_idle(svc, 5.0)
    assert used < 0.5, f"idle labelsd used {used:.2f}s of CPU in 5s"
    assert svc.alive()


# --------------------------------------------------------------------------- restarts


def test_stop_crash_and_poll_restarts_label_everything_once(tmp_path, weights_files):
    """SIGTERM mid-burst exits 0 quickly; the restart carries on and is killed -9
    mid-work; files land while it is down; a --poll restart finishes everything,
    picks up a dropped file, and every image is labelled exactly once."""
    home = real(tmp_path)
    inbox = home / "inbox"
    inbox.mkdir()
    svc = Service(home, db=home / "labels.db", weights=weights_files.legacy_h5, watch=[inbox])
    staged = make_batch(home / "staging", 70, first_seed=2000)
    try:
        svc.start().wait_ready()
        first = staged[:40]
        for src in first:
            shutil.copy(src, inbox / src.name)
        wait_for(lambda: svc.count_with_status([inbox / p.name for p in first], "done") >= 3,
                 120, "the first images to be labelled", on_timeout=svc.tail)

        # 1. SIGTERM mid-burst: exit 0 within 10 s, claims handed back
        started = time.monotonic()
        svc.signal(signal.SIGTERM)
        assert svc.wait_exit(15) == 0, svc.tail()
        assert time.monotonic() - started < 10, svc.tail()
        assert svc.query("SELECT count(*) FROM queue WHERE claimed_by IS NOT NULL")[0][0] == 0
        assert svc.query("SELECT count(*) FROM nodes WHERE stopped_at IS NULL")[0][0] == 0
        left = len(first) - svc.count_with_status([inbox / p.name for p in first], "done")
        assert left > 0, "the burst finished before SIGTERM; the test proves nothing"

        # 2. restart: it resumes the queue; kill -9 while it works
        svc.start().wait_ready()
        done_before = svc.count_with_status([inbox / p.name for p in first], "done")
        more = staged[40:60]
        for src in more:
            shutil.copy(src, inbox / src.name)
        wait_for(lambda: svc.count_with_status([inbox / p.name for p in first], "done")
                 > done_before, 120, "the restart to resume the queue", on_timeout=svc.tail)
        dead_node = svc.query("SELECT node_id FROM nodes WHERE stopped_at IS NULL")[0][0]
        svc.signal(signal.SIGKILL)
        svc.wait_exit(10)
        while_down = staged[60:]
        for src in while_down:
            shutil.copy(src, inbox / src.name)

        # 3. --poll restart: the dead node's claims are taken over at once, everything ends done
        svc.start(["--poll"]).wait_ready()
        assert svc.query("SELECT count(*) FROM queue WHERE claimed_by = ?", (dead_node,)) == [(0,)]
        all_paths = [inbox / p.name for p in staged]
        svc.wait_settled(all_paths, 240, want=("done",))
        dropped = make_image(home / "dropped.jpg", size=SIZE, seed=2999)
        shutil.copy(dropped, inbox / "dropped.jpg")  # seen by polling only
        svc.wait_settled([inbox / "dropped.jpg"], SETTLE_S, want=("done",))
        assert "polling every" in svc.log()

        shas = [sha256_of(p) for p in all_paths]
        assert len(set(shas)) == len(staged)
        per_content = svc.predictions_per_content()
        assert {per_content.get(s) for s in shas} == {3}
        assert svc.query("SELECT count(*) FROM paths")[0][0] == len(staged) + 1
        assert svc.query("SELECT count(*) FROM queue")[0][0] == 0
        assert svc.stop() == 0, svc.tail()
        assert svc.integrity() == "ok"
    finally:
        if svc.alive():
            svc.proc.kill()


# --------------------------------------------------------------------------- errors


def test_no_weights_is_one_line_and_exit_1(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    run = subprocess.run([str(LABELSD), "--watch", str(inbox), "--db", str(tmp_path / "l.db"),
                          "--weights", str(tmp_path / "nope.h5")],
                         capture_output=True, text=True, env=service_env(tmp_path), timeout=120)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("labelsd: error:")]
    assert len(errors) == 1 and "Traceback" not in run.stderr
    assert not (tmp_path / "l.db").exists()  # a failed start creates no database


def test_missing_weights_name_both_ways_out_and_leave_no_database(tmp_path):
    """No InceptionV3 weights (none in keras' cache, no --weights, and offline: a proxy
    that refuses): one line naming both ways out, fetching the weights or
    --model efficientnet_lite0, and nothing created, neither the database nor its lock."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    db = tmp_path / "library" / "labels.db"
    env = service_env(tmp_path, https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
                      no_proxy="", NO_PROXY="")
    run = subprocess.run([str(LABELSD), "--watch", str(inbox), "--db", str(db)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1, run.stderr
    [error] = [line for line in run.stderr.splitlines() if line.startswith("labelsd: error:")]
    assert "labels model fetch" in error and "--model efficientnet_lite0" in error, error
    assert "Traceback" not in run.stderr
    assert not db.parent.exists(), sorted(p.name for p in db.parent.iterdir())


def test_nothing_to_watch_is_a_clear_line(tmp_path):
    run = subprocess.run([str(LABELSD), "--db", str(tmp_path / "l.db")], capture_output=True,
                         text=True, env=service_env(tmp_path), timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().startswith("labelsd: error: nothing to watch")


@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_text("notes"), "not a folder"),  # issue 26: it said "no such folder"
    (lambda p: None, "no such folder"),
])
def test_a_watch_that_is_not_a_folder_says_what_it_is(tmp_path, make, says):
    target = tmp_path / "notes.txt"
    make(target)
    run = subprocess.run([str(LABELSD), "--watch", str(target), "--db", str(tmp_path / "l.db")],
                         capture_output=True, text=True, env=service_env(tmp_path), timeout=60)
    assert run.returncode == 1
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"labelsd: error: cannot watch {target}: {says}"), line


def test_help_lists_every_option():
    out = subprocess.run([str(LABELSD), "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    for option in ("--watch", "--db", "--weights", "--config", "--batch-size", "--device",
                   "--poll", "--log-level"):
        assert option in out


# --------------------------------------------------------------------------- in process


def test_inotify_watch_limit_falls_back_to_polling(tmp_path, store, caplog):
    """ENOSPC from inotify (fs.inotify.max_user_watches reached): one clear line,
    and that root is polled instead of the service dying."""
    from labelsd.store import workqueue
    from labelsd.watch.watcher import Watcher

    class ExhaustedInotify(FakeInotify):
        def schedule(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    inbox = real(tmp_path / "inbox")
    inbox.mkdir()
    woke = threading.Event()
    with caplog.at_level(logging.INFO, logger="labelsd"):
        with Watcher(store, [inbox], on_enqueued=woke.set, inotify_factory=ExhaustedInotify):
            make_image(inbox / "a.jpg", size=SIZE)
            wait_for(woke.is_set, 30, "the polled file to be queued")
    assert workqueue.queue_depth(store) == 1
    limit_lines = [r for r in caplog.records if "fs.inotify.max_user_watches" in r.getMessage()]
    assert len(limit_lines) == 1 and limit_lines[0].levelno == logging.WARNING
    assert any("polling every" in r.getMessage() for r in caplog.records)


def test_inotify_queue_overflow_rescans_the_roots(tmp_path, store, caplog):
    """The kernel dropped events (watchdog only logs it): every root is rescanned."""
    from labelsd.store import workqueue
    from labelsd.watch.watcher import Watcher

    inbox = real(tmp_path / "inbox")
    inbox.mkdir()
    woke = threading.Event()
    scans = lambda: [r for r in caplog.records if r.getMessage().startswith("scanned ")]  # noqa: E731
    with caplog.at_level(logging.INFO, logger="labelsd"), \
            Watcher(store, [inbox], on_enqueued=woke.set, inotify_factory=FakeInotify):
        wait_for(lambda: len(scans()) == 1, 10, "the start-up scan to finish")
        make_image(inbox / "lost.jpg", size=SIZE)
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")
        wait_for(lambda: len(scans()) == 2, 30, "the rescan")
        wait_for(woke.is_set, 30, "the rescanned file to settle and be queued")
    assert workqueue.queue_depth(store) == 1


def _in_user_namespace(tmp_path: Path, limit: int, scenario: str) -> dict:
    """Run tests/userns_child.py in a user and mount namespace of its own, where it may
    lower the inotify watch limit and mount file systems; its JSON result."""
    import json
    import sys

    try:
        usable = subprocess.run(["unshare", "-Urm", "true"], capture_output=True,
                                timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        usable = False
    if not usable:
        pytest.skip("unprivileged user namespaces (unshare -Urm) are off on this machine")
    child = Path(__file__).with_name("userns_child.py")
    run = subprocess.run(["unshare", "-Urm", sys.executable, str(child), str(limit), scenario,
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("scenario", ["start", "grow"])
@pytest.mark.userns
def test_subfolders_past_the_inotify_limit_are_polled_not_lost(tmp_path, scenario):
    """Real inotify with the watch limit lowered to 5 in a user namespace.
    watchdog skips a subfolder it cannot watch without a word, so without the
    watcher's own check the photo in such a folder is never seen:
    start: the tree already needs more watches than the limit (9 folders);
    grow: new folders, each with a photo, use the watches up while running."""
    result = _in_user_namespace(tmp_path, 5, scenario)
    assert result["photos"] == (1 if scenario == "start" else 7)
    assert result["queued"] == result["photos"], result["log"]
    limit_lines = [line for line in result["log"] if "fs.inotify.max_user_watches" in line]
    assert len(limit_lines) == 1 and limit_lines[0].startswith("WARNING"), result["log"]
    assert any("polling every" in line for line in result["log"])


def test_photo_closed_before_its_new_folders_watch_is_still_queued(tmp_path, store):
    """`mkdir album; cp x.jpg album/` can finish before the folder's watch exists:
    no close event comes, and watchdog (before 7.x) reports the file only as a
    synthetic creation. The folder's own creation event settles what it holds."""
    from watchdog.events import DirCreatedEvent, FileCreatedEvent

    from labelsd.store import workqueue
    from labelsd.watch.watcher import Watcher

    handlers = []

    class RecordingInotify(FakeInotify):
        def schedule(self, handler, *args, **kwargs):
            handlers.append(handler)
            return object()

    inbox = real(tmp_path / "inbox")
    inbox.mkdir()
    woke = threading.Event()
    with Watcher(store, [inbox], on_enqueued=woke.set, inotify_factory=RecordingInotify,
                 settle_s=0.2):
        album = inbox / "album"
        album.mkdir()
        photo = make_image(album / "p.jpg", size=SIZE)
        handlers[0].dispatch(DirCreatedEvent(os.fsencode(album)))
        handlers[0].dispatch(FileCreatedEvent(os.fsencode(photo), is_synthetic=True))
        wait_for(woke.is_set, 30, "the photo in the new folder to be queued")
    assert workqueue.queue_depth(store) == 1


@pytest.mark.userns
def test_share_mounted_on_the_watched_folder_after_start_is_watched(tmp_path):
    """A NAS share mounted on the watched folder after labelsd began watching it (the
    watch is on the folder underneath, which hears nothing): the photo already on
    the share and one that lands later are both queued."""
    result = _in_user_namespace(tmp_path, 0, "mount")
    assert result["queued"] == result["photos"] == 2, result["log"]
    assert any("is a new folder" in line and line.startswith("INFO")
               for line in result["log"]), result["log"]


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
def test_watched_folder_deleted_then_made_again_is_watched_again(tmp_path, store, caplog, poll):
    """`rm -r inbox; mkdir inbox` (or a drive unplugged and back): one warning, the
    photos show as missing meanwhile, and a photo in the new folder is queued.
    (watchdog's polling emitter even stops for good once its folder is gone.)"""
    from labelsd.store import workqueue
    from labelsd.watch.watcher import Watcher

    inbox = real(tmp_path / "inbox")
    inbox.mkdir()
    make_image(inbox / "old.jpg", size=SIZE)
    lines = lambda text: [r for r in caplog.records if text in r.getMessage()]  # noqa: E731
    with caplog.at_level(logging.INFO, logger="labelsd"), \
            Watcher(store, [inbox], on_enqueued=lambda: None, poll=poll,
                    root_check_s=0.2) as watcher:
        wait_for(lambda: workqueue.queue_depth(store) == 1, 30, "old.jpg to be queued")
        assert watcher.absent_roots == {}
        shutil.rmtree(inbox)
        wait_for(lambda: lines("is gone"), 30, "the folder to be noticed gone")
        assert watcher.absent_roots == {str(inbox): os.strerror(errno.ENOENT)}
        wait_for(lambda: workqueue.queue_depth(store) == 0, 30, "old.jpg to leave the queue")
        inbox.mkdir()
        wait_for(lambda: lines(" is back: "), 30, "the folder to be noticed back")
        assert watcher.absent_roots == {}
        make_image(inbox / "new.jpg", size=SIZE, seed=7)
        wait_for(lambda: workqueue.queue_depth(store) == 1, 30, "new.jpg to be queued")
    gone = lines("is gone")
    assert len(gone) == 1 and gone[0].levelno == logging.WARNING
    with store.read() as session:
        from labelsd.store.schema import TrackedPath
        rows = {row.path: row.missing for row in session.query(TrackedPath)}
    # old.jpg was never read (no pipeline here), so it is forgotten rather than kept missing
    assert rows == {str(inbox / "new.jpg"): False}


def test_polling_paces_itself_on_a_tree_that_takes_long_to_snapshot(tmp_path):
    """A polled root whose snapshot takes 50 ms is snapshotted every 0.5 s at most
    (POLL_PACE 10), not every 10 ms: a big share costs a tenth of a core at most."""
    from watchdog.events import FileSystemEventHandler

    from labelsd.watch.observers import POLL_PACE, paced_polling_observer

    root = str(real(tmp_path))
    snapshots: list[float] = []

    def slow_scandir(path):
        if os.fsdecode(path) == root:  # once per snapshot
            snapshots.append(time.monotonic())
            time.sleep(0.05)  # stands for the stat()s of a big tree or a slow share
        return os.scandir(path)

    observer = paced_polling_observer(timeout=0.01, listdir=slow_scandir)
    observer.schedule(FileSystemEventHandler(), root, recursive=True)
    observer.start()
    try:
        wait_for(lambda: len(snapshots) >= 4, 30, "four snapshots")
    finally:
        observer.stop()
        observer.join(5)
    gaps = [b - a for a, b in zip(snapshots[1:], snapshots[2:])]  # after the first paced one
    assert min(gaps) >= 0.8 * POLL_PACE * 0.05, snapshots
