"""Runs in a user namespace of its own (`unshare -Urm`) for test_service: there it
may lower the inotify watch limit (`user.max_inotify_watches`, which the kernel
enforces on top of the host's) and mount file systems. It watches a folder with
a real `Watcher` and real inotify, and prints what happened as one JSON line.

    python userns_child.py LIMIT start|grow|mount HOME      (LIMIT 0: unchanged)

start: the folder already has more subfolders than the limit allows watches;
       a photo then lands in the deepest one.
grow:  the folder starts with room to spare; new subfolders use the watches
       up, then a photo lands in each.
mount: a share that already holds a photo is mounted on the watched (empty)
       folder after the watch began, as when a NAS comes up after labelsd;
       then a second photo lands on it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imagegen import make_image  # noqa: E402
from labelsd.store import workqueue  # noqa: E402
from labelsd.store.engine import open_store  # noqa: E402
from labelsd.watch.watcher import Watcher  # noqa: E402

DEADLINE_S = 30.0


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def main() -> int:
    limit, scenario, home = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    if limit:
        Path("/proc/sys/user/max_inotify_watches").write_text(f"{limit}\n")
    lines = Lines()
    logging.getLogger("labelsd").addHandler(lines)
    logging.getLogger("labelsd").setLevel(logging.INFO)

    inbox = home / "inbox"
    inbox.mkdir()
    if scenario == "start":
        deep = inbox.joinpath(*"abcdefgh")
        deep.mkdir(parents=True)
    store = open_store(f"sqlite:///{home / 'labels.db'}")
    photos: list[Path] = []
    with Watcher(store, [str(inbox)], on_enqueued=threading.Event().set, root_check_s=0.5):
        wait(lambda: any(line.startswith("INFO scanned ") for line in lines.lines), DEADLINE_S)
        if scenario == "start":
            photos.append(make_image(deep / "deep.jpg", size=(64, 48), seed=1))
        elif scenario == "mount":
            share = home / "share"
            share.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "labelsd-test", str(share)], check=True)
            make_image(share / "already-there.jpg", size=(64, 48), seed=1)
            subprocess.run(["mount", "--bind", str(share), str(inbox)], check=True)
            photos.append(inbox / "already-there.jpg")
            wait(lambda: workqueue.queue_depth(store) == 1, DEADLINE_S)  # found by the rescan
            photos.append(make_image(inbox / "new.jpg", size=(64, 48), seed=2))
        else:
            folders = [inbox / f"album{i}" for i in range(limit + 2)]
            for folder in folders:
                folder.mkdir()
            # The photos land once the watches are used up, so no folder's own
            # creation event finds them: only a watch (or polling) can.
            wait(lambda: any("no watch left" in line for line in lines.lines), DEADLINE_S)
            photos += [make_image(folder / f"p{i}.jpg", size=(64, 48), seed=i)
                       for i, folder in enumerate(folders)]
        wait(lambda: workqueue.queue_depth(store) == len(photos), DEADLINE_S)
        queued = workqueue.queue_depth(store)
    store.close()
    print(json.dumps({"photos": len(photos), "queued": queued, "log": lines.lines}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
