"""labelsd.owned and its users (issue 32, item 1), on crafted cache files: what the
service runs is trusted only when no one but the service (and root) can have written
it. The people of test_cache_perms are real uids; here root plays the service and a
file of uid 65534 (or one others may write) plays what a member left."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
from pathlib import Path

import pytest

from labelsd import owned
from labelsd.errors import ConfigError
from labelsd.fileio import file_sha256
from labelsd.model import convert, digests
from labelsd.model import weights as weights_files

SOMEONE = 65534
SHA = "ab" * 32

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="crafts files of other users (chown)")


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    """Each test says its warnings anew, and has a cache of its own."""
    monkeypatch.setattr(owned, "_said", set())
    monkeypatch.setattr(weights_files, "_keras_ready", [])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def with_umask(mask: int, fn):
    old = os.umask(mask)
    try:
        return fn()
    finally:
        os.umask(old)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_folders_and_files_are_the_services_alone_whatever_the_umask(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o2770)  # the system unit's state folder, UMask 0007
    folder = with_umask(0o007, lambda: owned.private_folder(state / ".cache" / "labels" / "tflite"))
    for made in (state / ".cache", state / ".cache" / "labels", folder):
        assert mode(made) == 0o700, (made, oct(mode(made)))
    with_umask(0o007, lambda: owned.write_json(folder / "x.json", {"a": 1}))
    assert mode(folder / "x.json") == 0o600
    assert owned.read_json(folder / "x.json") == {"a": 1}


def _craft(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    path = folder / "model.tflite"
    path.write_bytes(b"TFL3")
    path.chmod(0o644)
    if case == "file others may write":
        path.chmod(0o660)
    elif case == "file the world may write":
        path.chmod(0o646)
    elif case == "file of someone else":
        os.chown(path, SOMEONE, SOMEONE)
    elif case == "folder others may write":
        folder.chmod(0o2770)
    elif case == "folder of someone else":
        os.chown(folder, SOMEONE, SOMEONE)
    elif case == "a folder on the way of someone else":
        os.chown(tmp_path, SOMEONE, SOMEONE)
    elif case == "a symbolic link":
        (folder / "real").write_bytes(b"TFL3")
        path.unlink()
        path.symlink_to(folder / "real")
    elif case == "a FIFO":
        path.unlink()
        os.mkfifo(path, 0o600)
    return path


@pytest.mark.parametrize(("case", "said"), [
    ("file others may write", "can be written by others (mode 0660)"),
    ("file the world may write", "can be written by others (mode 0646)"),
    ("file of someone else", f"(uid {SOMEONE})"),
    ("folder others may write", "can be written by others (mode 2770)"),
    ("folder of someone else", f"(uid {SOMEONE})"),
    ("a folder on the way of someone else", f"(uid {SOMEONE})"),
    ("a symbolic link", "is a symbolic link"),
    ("a FIFO", "not a regular file"),
])
def test_what_someone_else_can_have_written_is_not_trusted(tmp_path, case, said):
    path = _craft(tmp_path, case)
    with pytest.raises(owned.Untrusted) as refused:
        owned.open_trusted(path)
    assert said in str(refused.value), str(refused.value)


def test_a_folder_others_may_write_on_the_way_is_no_harm(tmp_path):
    """The 2770 state folder: renaming its entries can only trade the service's own
    folders, each checked as it is entered."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o2770)
    path = _craft(state, "fine")
    with owned.open_trusted(path) as f:
        assert f.read() == b"TFL3"
        assert Path(owned.fd_path(f, path)).read_bytes() == b"TFL3"


def test_an_old_group_writable_cache_is_made_the_services_again_once(tmp_path, caplog):
    """What an older labelsd left under UMask 0007: the folders the service's again, and
    every file someone else could have written gone; said once at WARNING."""
    cache = owned.cache_dir()
    (cache / "tflite").mkdir(parents=True)
    for folder in (cache, cache / "tflite"):
        folder.chmod(0o2770)
    (cache / "digests.json").write_text("{}")
    (cache / "digests.json").chmod(0o660)
    (cache / "tflite" / "m.tflite").write_bytes(b"x")
    (cache / "tflite" / "m.tflite").chmod(0o660)
    (cache / "tflite" / "kept.tflite").write_bytes(b"x")  # 0644 and the service's: kept
    (cache / "tflite" / "planted").write_bytes(b"x")
    os.chown(cache / "tflite" / "planted", SOMEONE, SOMEONE)
    for _ in range(2):
        owned.private_folder(cache)
    assert mode(cache) == mode(cache / "tflite") == 0o700
    assert sorted(p.name for p in cache.rglob("*")) == ["kept.tflite", "tflite"]
    said = warnings_of(caplog)
    assert len(said) == 1 and "removed digests.json" in said[0] and "0700" in said[0], said


def test_a_cache_of_someone_else_is_not_used(tmp_path, caplog):
    """A member made the service's ~/.cache/labels before it did (the state folder is
    the group's to write): converted into a folder of this process's instead."""
    cache = owned.cache_dir()
    cache.mkdir(parents=True)
    os.chown(cache, SOMEONE, SOMEONE)
    weights = tmp_path / "pkg" / "w.h5"  # a folder the service may not write: not beside it
    weights.parent.mkdir()
    weights.parent.chmod(0o777)
    folder = convert.cache_folder(weights)
    assert folder == owned.scratch_folder() and mode(folder) == 0o700
    assert not str(folder).startswith(str(cache))
    said = warnings_of(caplog)
    assert len(said) == 1 and f"(uid {SOMEONE})" in said[0], said
    assert digests.remembered(weights.parent, "facts", lambda p: {"n": 1}) == {"n": 1}  # not kept
    assert len(warnings_of(caplog)) == 1


class FakeChild:
    """Stands in for the converting child: writes `payload` where it was told to."""

    def __init__(self, payload: bytes):
        self.payload, self.calls = payload, []

    def __call__(self, cmd, **kwargs):
        self.calls.append(kwargs)
        with open(cmd[cmd.index("--out") + 1], "wb") as out:
            out.write(self.payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")


def _cached(weights: Path, data: bytes, file_mode: int) -> Path:
    tflite, meta = convert.cache_paths(weights, SHA, "inception_v3", "int8")
    tflite.write_bytes(data)
    meta.write_text(json.dumps({**convert._record(SHA, "inception_v3", "int8"),
                                "tflite_size": len(data), "tflite_sha256": file_sha256(tflite)}))
    tflite.chmod(file_mode)
    return tflite


def test_a_cached_model_others_could_write_is_converted_again(tmp_path, monkeypatch, caplog):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"w")
    tflite = _cached(weights, b"TFL3 chosen by someone else", 0o660)
    assert convert.cached_tflite(weights, SHA, "inception_v3", "int8") is None
    child = FakeChild(b"TFL3 the service's own")
    monkeypatch.setattr(convert.subprocess, "run", child)
    with owned.open_trusted(convert.ensure_tflite(weights, SHA, "inception_v3", "int8")) as f:
        assert f.read() == b"TFL3 the service's own"
    assert len(child.calls) == 1 and child.calls[0]["umask"] == 0o077
    assert mode(tflite) == mode(tflite.with_name(tflite.name + ".json")) == 0o600
    said = warnings_of(caplog)
    assert len(said) == 1 and "can be written by others (mode 0660)" in said[0], said


def test_the_model_loaded_is_the_file_that_was_checked(tmp_path):
    """LiteRT is handed the checked descriptor: what the name holds a moment later
    does not matter."""
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"w")
    tflite = _cached(weights, b"TFL3 checked", 0o600)
    with convert.opened_tflite(weights, SHA, "inception_v3", "int8") as (path, source):
        assert path == tflite and source.startswith("/proc/self/fd/")
        swapped = tflite.with_name("swapped")
        swapped.write_bytes(b"TFL3 swapped in")
        os.replace(swapped, tflite)
        assert Path(source).read_bytes() == b"TFL3 checked"


def test_weights_in_a_folder_others_may_write_are_not_the_cache(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2770)
    assert convert.cache_folder(shared / "w.h5") == owned.cache_dir() / "tflite"
    assert convert.cache_folder(tmp_path / "w.h5") == tmp_path  # the service's own


def test_digests_someone_else_could_write_are_not_believed(tmp_path, caplog):
    f = tmp_path / "weights.h5"
    f.write_bytes(b"real weights")
    digests.remembered(f, "sha256", lambda p: {"sha256": file_sha256(p)})
    cache = digests.cache_file()
    entries = json.loads(cache.read_text())
    for entry in entries.values():
        entry["facts"] = {"sha256": "forged"}
    cache.write_text(json.dumps(entries))
    cache.chmod(0o666)
    assert digests.remembered(f, "sha256", lambda p: {"sha256": file_sha256(p)})["sha256"] != "forged"
    assert mode(cache) == 0o600  # written again, the service's alone
    assert len(warnings_of(caplog)) == 1


def test_keras_settings_are_written_before_keras_would(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "state" / "keras"))
    (tmp_path / "state").mkdir()
    (tmp_path / "state").chmod(0o2770)
    with_umask(0o007, weights_files.keras_settings_ready)
    config = tmp_path / "state" / "keras" / "keras.json"
    assert json.loads(config.read_text()) == weights_files.KERAS_DEFAULTS
    assert mode(config) == 0o600 and mode(config.parent) == 0o700


def test_keras_settings_of_someone_else_that_cannot_be_replaced_stop_the_start(tmp_path, monkeypatch):
    keras = tmp_path / "keras"
    keras.mkdir()
    (keras / "keras.json").write_text("{}")
    os.chown(keras, SOMEONE, SOMEONE)
    monkeypatch.setenv("KERAS_HOME", str(keras))
    with pytest.raises(ConfigError, match=f"uid {SOMEONE}.*set KERAS_HOME"):
        weights_files.keras_settings_ready()
