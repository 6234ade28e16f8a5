"""Who may use the library: a new database is its owner's alone, or its
folder's group's where the folder is shared (the system service's
/var/lib/labelsd, 2770 labelsd:labels); a member of that group searches and
tags; anyone else gets one line naming the group to join, never a traceback.

The people are real: the tests run `labels` under other uids and gids with
setpriv (so they need root), with this venv's Python and this checkout's code,
made reachable to them where a folder above lets no one in (tests/reachable.py).
"""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import reachable
from labelsd import records
from labelsd.paths import canonical_path
from labelsd.records import Prediction
from labelsd.store import contents, workqueue
from labelsd.store.engine import open_store

PREDS = [Prediction(1, "tabby", "n02123045", 281, 0.7),
         Prediction(2, "tiger cat", "n02123159", 282, 0.2),
         Prediction(3, "Egyptian cat", "n02124075", 285, 0.05)]
NOBODY = 65534
SETPRIV = shutil.which("setpriv")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def needs_setpriv():
    if os.geteuid() != 0 or SETPRIV is None:
        pytest.skip("running as other users needs root and setpriv (util-linux)")


# The `labels` entry point, run by this venv's Python as another user.
_LABELS_MAIN = "import sys; sys.argv[0] = 'labels'; from labels_cli.app import main; main()"


def labels_as(uid: int, gid: int, groups: list[int], *args: str, env: dict[str, str],
              cwd: str = "/") -> subprocess.CompletedProcess:
    """`labels ARGS` run as uid:gid with exactly these supplementary groups."""
    ids = ["--reuid", str(uid), "--regid", str(gid)]
    ids += ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    run_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent",
               "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PYTHONDONTWRITEBYTECODE": "1", **env}
    argv = reachable.wrap([SETPRIV, *ids, "--", sys.executable, "-c", _LABELS_MAIN, *args])
    return subprocess.run(argv, capture_output=True, text=True, env=run_env, cwd=cwd, timeout=120)


@pytest.fixture
def shared_tmp():
    """A folder under /tmp that other users may enter (pytest's tmp_path is
    inside root's 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="labelsd-install-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def classify(store, path: str, sha: str) -> None:
    """A path labelled as the pipeline would (no model needed)."""
    workqueue.enqueue(store, [records.FileFacts(path, 10, 1)])
    claims = [c for c in workqueue.claim(store, "test-node", 100) if c.path == canonical_path(path)]
    contents.record_outcomes(store, "test-node", [records.Outcome(
        claims[0], "classified", sha256=sha, size=10, mtime_ns=1, width=640, height=480,
        format="JPEG", model="InceptionV3/test", predictions=PREDS)])


def _with_umask(mask: int, fn):
    old = os.umask(mask)
    try:
        return fn()
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- creation modes


def test_a_new_database_and_its_folder_are_the_owners_alone(tmp_path):
    db = tmp_path / "share" / "labels" / "labels.db"
    store = _with_umask(0o022, lambda: open_store(str(db)))  # the usual umask: 0644 files
    try:
        classify(store, str(tmp_path / "cat.jpg"), "a" * 64)  # a write: -wal and -shm exist
        assert _mode(db.parent) == 0o700
        assert _mode(db) == 0o600
        for side in ("labels.db-wal", "labels.db-shm"):
            assert _mode(db.parent / side) == 0o600, side  # SQLite copies the database's mode
    finally:
        store.close()


def test_a_database_in_a_group_folder_is_the_groups_too(tmp_path):
    folder = tmp_path / "var-lib-labelsd"
    folder.mkdir()
    folder.chmod(0o2770)  # as the system unit's StateDirectoryMode makes it
    db = folder / "labels.db"
    store = _with_umask(0o027, lambda: open_store(str(db)))  # a umask that would drop g+w
    try:
        classify(store, str(tmp_path / "cat.jpg"), "a" * 64)
        assert _mode(db) == 0o660
        assert _mode(folder / "labels.db-wal") == 0o660
    finally:
        store.close()


def test_an_existing_database_keeps_its_mode(tmp_path):
    db = tmp_path / "labels.db"
    open_store(str(db)).close()
    db.chmod(0o640)  # its owner's choice
    open_store(str(db)).close()
    assert _mode(db) == 0o640


# --------------------------------------------------------------------------- other people


def group_folder(folder: Path) -> int:
    """`folder` made shared with the group `staff` as the system service's is with
    `labels` (2770 root:staff); the group's id. Skips without setpriv or the group."""
    needs_setpriv()
    try:
        gid = grp.getgrnam("staff").gr_gid
    except KeyError:
        pytest.skip("no group 'staff' on this machine")
    folder.mkdir()
    os.chown(folder, 0, gid)
    folder.chmod(0o2770)
    return gid


@pytest.fixture
def group_library(shared_tmp):
    """A library shared with the group `staff`: folder 2770 root:staff (`group_folder`),
    one labelled photo, a config naming it."""
    folder = shared_tmp / "state"
    gid = group_folder(folder)
    db = folder / "labels.db"
    photo = str(shared_tmp / "photos" / "cat.jpg")
    store = open_store(str(db))
    try:
        classify(store, photo, "b" * 64)
    finally:
        store.close()
    config = shared_tmp / "config.toml"
    config.write_text(f'db = "{db}"\n')
    config.chmod(0o644)
    return {"gid": gid, "db": db, "photo": photo, "env": {"LABELS_CONFIG": str(config)}}


def test_someone_outside_the_group_gets_one_line_naming_it(group_library):
    lib = group_library
    for command in (["search", "cat"], ["tag", lib["photo"], "mine"], ["status"]):
        run = labels_as(NOBODY, NOBODY, [], *command, env=lib["env"])
        assert run.returncode == 1, (command, run.stdout, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith("labels: error: cannot open the database")
        assert "'staff'" in lines[0] and "sudo usermod -aG staff nobody" in lines[0], lines[0]
        assert "Traceback" not in run.stdout + run.stderr


def test_a_member_of_the_group_searches_and_tags(group_library):
    lib = group_library
    member = (NOBODY, NOBODY, [lib["gid"]])
    found = labels_as(*member, "search", "cat", "--paths", env=lib["env"])
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [lib["photo"]]
    tagged = labels_as(*member, "tag", lib["photo"], "shared", env=lib["env"])
    assert tagged.returncode == 0, tagged.stderr
    store = open_store(str(lib["db"]))
    try:
        assert store.record(lib["photo"]).tags == ["shared"]
    finally:
        store.close()
    # what the member's connection left beside the database stays the group's
    for side in lib["db"].parent.iterdir():
        assert side.stat().st_gid == lib["gid"] and _mode(side) == 0o660, side


def test_any_other_refusal_is_one_line_too(group_library, shared_tmp):
    """A PermissionError the store does not foresee is still one line, through
    the CLI's boundary: here the config lookup meets another user's home, as
    `sudo -u labelsd labels ...` does when sudo keeps HOME=/root."""
    lib = group_library
    home = shared_tmp / "roots-home"
    (home / ".config" / "labels").mkdir(parents=True)
    home.chmod(0o700)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    run = labels_as(NOBODY, NOBODY, [lib["gid"]], "search", "cat", env=env)
    assert run.returncode == 1, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labels: error: cannot open the file "), run.stderr
    assert f"{home} is root's alone" in lines[0] and "Traceback" not in run.stderr


def test_no_group_is_named_when_joining_it_would_not_help(group_library, shared_tmp):
    """A folder everyone may read but only its owner write (0755 root:staff):
    being in `staff` would change nothing, so the line says whose it is."""
    folder = shared_tmp / "readable"
    folder.mkdir()
    os.chown(folder, 0, group_library["gid"])
    folder.chmod(0o755)
    # `scan` may create a library, so it tries (every other command says there
    # is none there instead).
    empty = shared_tmp / "nothing-to-scan"
    empty.mkdir()
    empty.chmod(0o755)
    run = labels_as(NOBODY, NOBODY, [], "--db", str(folder / "labels.db"), "scan", str(empty),
                    env=group_library["env"])
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "usermod" not in run.stderr and "staff" not in run.stderr, run.stderr
    assert f"{folder} belongs to root: use a database of your own (--db FILE)" in run.stderr


def test_what_other_users_run_is_reachable_under_a_root_only_folder():
    """A clone under `mktemp -d` (0700): the people of these tests reach its files
    through tests/reachable.py, with the same paths and the same modes below."""
    needs_setpriv()
    top = Path(tempfile.mkdtemp(prefix="labelsd-root-only-"))  # 0700, root's
    try:
        code = top / "clone" / "code.txt"
        code.parent.mkdir()
        code.parent.chmod(0o755)
        code.write_text("reached\n")
        code.chmod(0o644)
        (top / "clone" / "private").mkdir(mode=0o700)
        as_nobody = [SETPRIV, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", "--",
                     "sh", "-c", f"cat {code}; ls {top / 'clone' / 'private'} 2>/dev/null || echo private"]
        assert reachable.blocked_folders([str(code)]) == [str(top)]
        plain = subprocess.run(as_nobody, capture_output=True, text=True, timeout=60)
        assert "reached" not in plain.stdout  # what the tests met before
        run = subprocess.run(reachable.wrap(as_nobody, [str(code)]), capture_output=True, text=True,
                             timeout=60)
        assert run.stdout.split() == ["reached", "private"], run.stderr  # modes below are kept
        assert _mode(top) == 0o700  # and nothing changed outside the namespace
    finally:
        shutil.rmtree(top, ignore_errors=True)
