"""A member of the library's group runs `labels serve` as themselves against the
shared library (as the system service's, folder 2770 with the group): searches,
sees the photos they may read, and tags through a form; someone outside the
group gets the one line `labels` gives. Real users, through setpriv (root only)."""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import reachable
from imagegen import make_image
from labelsd.store.engine import open_store
from test_access import _LABELS_MAIN, NOBODY, SETPRIV, group_folder, shared_tmp  # noqa: F401
from webkit import ServeProcess
from weblib import predictions, record


def serve_as(uid: int, groups: list[int], config: Path, cache: Path) -> ServeProcess:
    """`labels serve --port 0` to be run as uid with these groups (`start()` it)."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent",
           "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PYTHONDONTWRITEBYTECODE": "1",
           "LABELS_CONFIG": str(config), "XDG_CACHE_HOME": str(cache)}
    ids = ["--reuid", str(uid), "--regid", str(uid)]
    ids += ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    # reachable.wrap: the venv and the checkout stay reachable under a root-only folder
    argv = reachable.wrap([SETPRIV, *ids, "--", sys.executable, "-c", _LABELS_MAIN, "serve", "--port", "0"])
    return ServeProcess(argv=argv, env=env, cwd="/")


@pytest.fixture
def shared_library(shared_tmp):  # noqa: F811 - test_access's fixture, used here
    state = shared_tmp / "state"
    gid = group_folder(state)
    photos = shared_tmp / "photos"
    photos.mkdir()
    photos.chmod(0o755)
    cat = make_image(photos / "cat.jpg", size=(200, 150), seed=3, fmt="JPEG")
    cat.chmod(0o644)
    db = state / "labels.db"
    store = open_store(str(db))
    try:
        record(store, {cat: predictions((281, 0.7))})
    finally:
        store.close()
    config = shared_tmp / "config.toml"
    config.write_text(f'db = "{db}"\nwatch = ["{photos}"]\n')
    config.chmod(0o644)
    cache = shared_tmp / "cache"
    cache.mkdir(mode=0o777)
    cache.chmod(0o1777)
    return {"gid": gid, "db": db, "config": config, "cache": cache, "cat": cat}


def test_a_member_serves_the_shared_library_and_tags_in_it(shared_library):
    lib = shared_library
    server = serve_as(NOBODY, [lib["gid"]], lib["config"], lib["cache"]).start(timeout=60)
    address = server.url
    try:
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with browser.open(address + "search?q=cat", timeout=30) as page:
            sha = re.search(r'data-sha256="([0-9a-f]{64})"', page.read().decode()).group(1)
        with browser.open(f"{address}thumb/{sha}?size=128", timeout=30) as thumb:
            assert thumb.read()[:2] == b"\xff\xd8"  # the member reads the photo
        with browser.open(f"{address}photo/{sha}", timeout=30) as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.read().decode()).group(1)
        form = urllib.parse.urlencode({"csrf": csrf, "tag": "shared"}).encode()
        with browser.open(f"{address}photo/{sha}/tags", data=form, timeout=30) as done:
            assert done.status == 200 and "shared" in done.read().decode()
    finally:
        assert server.stop() == 0, "".join(server.lines)
    store = open_store(str(lib["db"]))
    try:
        assert store.record(str(lib["cat"])).tags == ["shared"]
    finally:
        store.close()
    # the member's thumbnails are the member's: their own cache folder, 0700
    made = lib["cache"] / "labels" / "thumbs"
    assert made.stat().st_uid == NOBODY and made.stat().st_mode & 0o777 == 0o700


def test_someone_outside_the_group_gets_the_one_line(shared_library):
    lib = shared_library
    server = serve_as(NOBODY, [], lib["config"], lib["cache"])
    with pytest.raises(AssertionError, match="was not ready"):
        server.start()
    output = "".join(server.lines)
    assert server.proc.returncode == 1, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("labels: error: cannot open the database"), output
    assert "'staff'" in lines[0]
    shutil.rmtree(lib["cache"], ignore_errors=True)
