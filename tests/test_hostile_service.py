"""The real `labelsd` against a hostile folder (issue 14): a FIFO and a symlink
swapped over queued photos behind a backlog, a name that is not UTF-8, a deep
tree moved in. Ordinary photos that arrive during and after each case are
labelled; the odd ones fail alone with a reason; SIGTERM stops it within 30 s."""

from __future__ import annotations

import os
import time
from pathlib import Path

from imagegen import make_image
from servicekit import Service, sha256_of, wait_for
from test_watch_hostile import make_deep_tree, remove_tree

SIZE = (320, 240)
DEADLINE_S = 240  # a backlog of 40 through InceptionV3 on two busy cores
STOP_S = 30


def swap(thing_maker, target: Path) -> None:
    tmp = target.with_name("." + target.name + ".swap")
    thing_maker(tmp)
    os.rename(tmp, target)


def test_hostile_folder_contents_cost_no_ordinary_photo(tmp_path, weights_files):
    home = Path(os.path.realpath(tmp_path))
    inbox, private = home / "inbox", home / "private"
    inbox.mkdir()
    private.mkdir()
    secret = make_image(private / "secret.png", size=SIZE, seed=99)
    svc = Service(home, db=home / "labels.db", weights=weights_files.legacy_h5, watch=[inbox])
    svc.start().wait_ready()
    try:
        # A backlog; the last two names are swapped once queued, before they are read.
        staging = home / "staging"
        staging.mkdir()
        backlog = [make_image(staging / f"b{i:02d}.jpg", size=SIZE, seed=i) for i in range(40)]
        fifo_victim = make_image(staging / "zy.jpg", size=SIZE, seed=200)
        link_victim = make_image(staging / "zz.png", size=SIZE, seed=201)
        for p in [*backlog, fifo_victim, link_victim]:
            os.rename(p, inbox / p.name)
        fifo_victim, link_victim = inbox / fifo_victim.name, inbox / link_victim.name
        backlog = [inbox / p.name for p in backlog]
        wait_for(lambda: svc.query("SELECT 1 FROM queue WHERE path IN (?, ?)",
                                   (str(fifo_victim), str(link_victim))).__len__() == 2,
                 60, "the two victims to be queued", on_timeout=svc.tail)
        swap(os.mkfifo, fifo_victim)
        swap(lambda p: os.symlink(secret, p), link_victim)
        # A name that is not UTF-8, and a tree deeper than watchdog recurses.
        odd = Path(os.fsdecode(os.path.join(os.fsencode(inbox), b"caf\xe9.jpg")))
        make_image(odd, size=SIZE, seed=300)
        make_deep_tree(home / "deep", 1000)
        os.rename(home / "deep", inbox / "deep")
        after = [make_image(inbox / f"after{i}.jpg", size=SIZE, seed=400 + i) for i in range(3)]

        statuses = svc.wait_settled([*backlog, *after, fifo_victim, link_victim], DEADLINE_S)
        assert all(statuses[str(p)] == "done" for p in [*backlog, *after]), statuses
        errors = dict(svc.query("SELECT path, last_error FROM queue WHERE state = 'failed'"))
        assert statuses[str(fifo_victim)] == "failed" and "FIFO" in errors[str(fifo_victim)]
        assert statuses[str(link_victim)] == "failed" and "symbolic link" in errors[str(link_victim)]
        assert not svc.query("SELECT 1 FROM contents WHERE sha256 = ?", (sha256_of(secret),))
        assert "not tracking " + os.fsencode(str(odd)).decode("utf-8", "backslashreplace") in svc.log()
        last = make_image(inbox / "last.jpg", size=SIZE, seed=500)
        svc.wait_settled([last], DEADLINE_S)
    finally:
        began = time.monotonic()
        code = svc.stop(STOP_S + 10)  # SIGTERM; kill -9 (code -9) if it hangs
        took = time.monotonic() - began
        for folder in (inbox / "deep", home / "deep"):
            if folder.exists():
                remove_tree(folder)
    assert code == 0 and took < STOP_S, (code, took, svc.tail())
