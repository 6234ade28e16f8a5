"""Issue 32, item 1: what the service runs can be written by the service (and root)
alone, whatever its umask. A member of the group `labels` tries to replace the
converted model on both layouts: the system service (UMask 0007 in a 2770 state folder
it shares with the group) and the user service (UMask 0077).

The people are real uids: each step runs in a child (cache_perms_child.py) that imports
labelsd as root and then drops to the user's uid, gid and groups, so the test needs
root but no Python other users may run. The conversion in the child is a stand-in."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("cache_perms_child.py")
SERVICE, MEMBER, LABELS = 64001, 64002, 64000  # uids and the group `labels`
GENUINE = "TFL3 the model the service made"
CHECKSUM = "ab" * 32

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as other users")


@pytest.fixture
def shared():
    """A folder under /tmp the test's people may enter (pytest's tmp_path is root's alone),
    with a weights file in a folder only root writes."""
    folder = Path(tempfile.mkdtemp(prefix="labelsd-cache-perms-"))
    folder.chmod(0o755)
    (folder / "weights").mkdir(mode=0o755)
    (folder / "weights" / "w.weights.h5").write_bytes(b"weights")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def step(name: str, home: Path, shared: Path, *, uid: int, umask: int, groups=(LABELS,)) -> dict:
    spec = {"step": name, "uid": uid, "gid": LABELS if uid == SERVICE and groups else uid,
            "groups": list(groups), "umask": umask, "home": str(home),
            "weights": str(shared / "weights" / "w.weights.h5"), "checksum": CHECKSUM}
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, str(CHILD), json.dumps(spec)], capture_output=True,
                          text=True, timeout=120, env=env, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def service(home, shared, umask=0o007):
    return step("service", home, shared, uid=SERVICE, umask=umask)


def member(name, home, shared):
    return step(name, home, shared, uid=MEMBER, umask=0o002)


def state_folder(shared: Path) -> Path:
    """/var/lib/labelsd as the system unit has it: 2770 labelsd:labels, the service's HOME."""
    state = shared / "state"
    state.mkdir()
    os.chown(state, SERVICE, LABELS)
    state.chmod(0o2770)
    return state


def others_may_write(mode_and_owner: str) -> bool:
    return bool(int(mode_and_owner.split()[0], 8) & (stat.S_IWGRP | stat.S_IWOTH))


def test_system_service_cache_is_the_services_alone(shared):
    state = state_folder(shared)
    first = service(state, shared)
    assert first["served"] == GENUINE and first["conversions"] == 1, first
    assert first["path"].startswith(str(state / ".cache" / "labels" / "tflite")), first
    made = first["modes"]
    assert made and not [p for p, m in made.items() if others_may_write(m)], made
    assert all(int(m.split()[0], 8) & 0o077 == 0 for m in made.values()), made  # 0700, 0600

    tried = member("member tries", state, shared)["tried"]
    assert set(tried.values()) == {"PermissionError"}, tried

    again = service(state, shared)
    assert again["conversions"] == 0 and again["served"] == GENUINE and not again["warnings"], again


def test_a_member_swapping_the_cache_folder_is_refused(shared):
    """The state folder is the group's to write, so a member can move the service's
    `.cache` aside and put one of their own, with a model and a record that agree."""
    state = state_folder(shared)
    service(state, shared)
    member("member swaps the folder", state, shared)
    after = service(state, shared)
    assert after["served"] == GENUINE and after["conversions"] == 1, after
    said = [w for w in after["warnings"] if ".cache" in w]
    assert len(said) == 1 and f"uid {MEMBER}" in said[0], after["warnings"]
    assert after["warnings"] == said, after["warnings"]


def test_an_old_group_writable_cache_is_refused_and_converted_again(shared):
    """What labelsd made before under UMask 0007 (2770 folders, 0660 files): a member
    replaces the model and its record; the service refuses them, once at WARNING."""
    state = state_folder(shared)
    step("old labelsd", state, shared, uid=SERVICE, umask=0o007)
    member("member swaps the model", state, shared)
    after = service(state, shared)
    assert after["served"] == GENUINE and after["conversions"] == 1, after
    assert len(after["warnings"]) == 1 and "others" in after["warnings"][0], after["warnings"]
    # ~/.cache itself may stay the group's: what is renamed in it is checked by its owner
    ours = {p: m for p, m in after["modes"].items() if p.startswith(str(state / ".cache" / "labels"))}
    assert ours and not [p for p, m in ours.items() if others_may_write(m)], after["modes"]
    tried = member("member tries", state, shared)["tried"]
    assert set(tried.values()) == {"PermissionError"}, tried


def test_user_service_keeps_and_trusts_its_own_cache(shared):
    """The user unit (UMask 0077, a home of the user's own): converted once, then used."""
    home = shared / "home"
    home.mkdir(mode=0o700)
    os.chown(home, SERVICE, SERVICE)
    first = step("service", home, shared, uid=SERVICE, umask=0o077, groups=())
    assert first["served"] == GENUINE and first["conversions"] == 1, first
    assert all(int(m.split()[0], 8) & 0o077 == 0 for m in first["modes"].values()), first["modes"]
    again = step("service", home, shared, uid=SERVICE, umask=0o077, groups=())
    assert again["conversions"] == 0 and not again["warnings"], again
    tried = member("member tries", home, shared)["tried"]
    assert set(tried.values()) == {"PermissionError"}, tried


KERAS_CHILD = """
import json, logging, os, sys
said = []
class Said(logging.Handler):
    def emit(self, record):
        said.append(record.getMessage())
logging.getLogger().addHandler(Said(logging.WARNING))
os.umask(0o007)
from labelsd.model.device import tensorflow_starting
with tensorflow_starting():  # as the service, the conversion and labels scan import keras
    import keras
print(json.dumps({"image_data_format": keras.config.image_data_format(), "warnings": said}))
"""


def _keras_start(keras_home: Path) -> dict:
    env = {**os.environ, "KERAS_HOME": str(keras_home), "https_proxy": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("no_proxy", None)
    done = subprocess.run([sys.executable, "-c", KERAS_CHILD], capture_output=True, text=True,
                          timeout=300, env=env, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.tf
def test_keras_settings_are_the_services_alone(shared):
    """keras writes keras.json (its backend, image layout, float type) through the
    umask when it is missing, and reads it at import: under UMask 0007 in the state
    folder it was the group's to write. Made the service's alone, and one a member
    wrote is replaced by keras' defaults (once at WARNING). Root plays the service here:
    keras is imported after the drop, which a checkout only root can read would stop."""
    state = state_folder(shared)
    os.chown(state, 0, LABELS)
    made = _keras_start(state / "keras")
    config = state / "keras" / "keras.json"
    assert stat.S_IMODE(config.stat().st_mode) & 0o077 == 0, oct(config.stat().st_mode)
    assert stat.S_IMODE(config.parent.stat().st_mode) & 0o077 == 0, oct(config.parent.stat().st_mode)
    assert made["image_data_format"] == "channels_last" and not made["warnings"], made

    config.parent.chmod(0o2770)  # as an older labelsd left them, and a member's settings
    config.write_text(json.dumps({"image_data_format": "channels_first"}))
    os.chown(config, MEMBER, LABELS)
    config.chmod(0o660)
    after = _keras_start(state / "keras")
    assert after["image_data_format"] == "channels_last", after
    assert len(after["warnings"]) == 1 and "keras.json" in after["warnings"][0], after
    assert stat.S_IMODE(config.stat().st_mode) & 0o077 == 0 and config.stat().st_uid == 0
    assert stat.S_IMODE(config.parent.stat().st_mode) & 0o022 == 0
