"""Runs as an unprivileged user (test_watch_perms: root reads any folder, so
the test drops to another uid first). Watches a folder with a real `Watcher`
and real inotify: one subfolder cannot be read at start, then is made
readable. Prints what happened as one JSON line.

    python watch_perms_child.py HOME
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imagegen import make_image  # noqa: E402
from labelsd.store.engine import open_store  # noqa: E402
from labelsd.store.schema import QueueItem  # noqa: E402
from labelsd.watch.watcher import Watcher  # noqa: E402
from userns_child import DEADLINE_S, Lines, wait  # noqa: E402  (the same child-process helpers)


def main() -> int:
    home = Path(sys.argv[1])
    lines = Lines()
    logging.getLogger("labelsd").addHandler(lines)
    logging.getLogger("labelsd").setLevel(logging.DEBUG)
    root = home / "inbox"
    locked = root / "locked"
    locked.mkdir(parents=True)
    ok = make_image(root / "ok.jpg", seed=1)
    inside = make_image(locked / "inside.jpg", seed=2)
    old = time.time() - 60  # settled long ago: queued by the scan at once
    for p in (ok, inside):
        os.utime(p, (old, old))
    locked.chmod(0)
    store = open_store(str(home / "labels.db"))

    def queued() -> set[str]:
        with store.read() as session:
            return set(session.scalars(select(QueueItem.path)))

    result: dict = {}
    with Watcher(store, [str(root)], on_enqueued=threading.Event().set, settle_s=0.2,
                 root_check_s=0.3):
        result["ok_queued"] = wait(lambda: str(ok) in queued(), DEADLINE_S)
        result["locked_readable_at_start"] = os.access(locked, os.R_OK)
        locked.chmod(0o755)  # as `chmod` or `setfacl` the README recommends
        result["inside_queued"] = wait(lambda: str(inside) in queued(), DEADLINE_S)
        later = make_image(locked / "later.jpg", seed=3)
        result["later_queued"] = wait(lambda: str(later) in queued(), DEADLINE_S)
    result["warnings"] = [line for line in lines.lines if line.startswith("WARNING")]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
