"""One step of test_cache_perms, run as another user. Everything is imported while the
process is still root (so a checkout under a folder only root can enter still works),
then it drops to the uid, gid and groups given, sets the umask and HOME, does the step
and prints one JSON line.

    python cache_perms_child.py '{"uid": 1, "gid": 1, "groups": [], "umask": 7,
                                  "home": "/x", "step": "service", ...}'

The conversion is a stand-in (no TensorFlow): `subprocess.run` in labelsd.model.convert
is replaced by a function that writes GENUINE into the `--out` file, as the real child
would write the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

from labelsd.model import convert

GENUINE = b"TFL3 the model the service made"
EVIL = b"TFL3 a model a member of the group chose"
MODEL, PRECISION = "inception_v3", "int8"


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def fake_run(cmd, **kwargs):
    out = Path(cmd[cmd.index("--out") + 1])
    with open(out, "wb") as f:  # as the real child does (Path.write_bytes)
        f.write(GENUINE)
    CONVERSIONS.append(str(out))
    return subprocess.CompletedProcess(cmd, 0, "", "")


CONVERSIONS: list[str] = []


def modes(top: Path) -> dict[str, str]:
    """Every path under `top` (and it) with its mode and owner."""
    found = {}
    try:
        for path in [top, *sorted(top.rglob("*"))]:
            st = path.lstat()
            found[str(path)] = f"{stat.S_IMODE(st.st_mode):04o} {st.st_uid}"
    except OSError:  # not there, or not this user's to look at
        pass
    return found


def write_record(tflite: Path, data: bytes, weights: Path, checksum: str) -> None:
    """The record beside a cached file, saying it holds `data` (what the service checks)."""
    record = {"format": convert.CONVERSION_FORMAT, "weights_checksum": checksum, "model": MODEL,
              "precision": PRECISION, "recipe": convert.RECIPES[PRECISION],
              "tflite_size": len(data), "tflite_sha256": hashlib.sha256(data).hexdigest()}
    tflite.with_name(tflite.name + ".json").write_text(json.dumps(record))


def attempts(tflite: Path) -> dict[str, str]:
    """What a member tries against a cache it should not be able to change."""
    tried = {}

    def attempt(name, action):
        try:
            action()
            tried[name] = "done"
        except OSError as err:
            tried[name] = type(err).__name__

    attempt("overwrite the model", lambda: tflite.write_bytes(EVIL))
    attempt("rewrite its record", lambda: tflite.with_name(tflite.name + ".json").write_text("{}"))
    attempt("add a file beside it", lambda: tflite.with_name("planted").write_bytes(EVIL))
    attempt("rename it", lambda: tflite.rename(tflite.with_name("moved")))
    return tried


def main() -> int:
    spec = json.loads(sys.argv[1])
    weights, checksum = Path(spec["weights"]), spec["checksum"]
    warnings = Warnings()
    logging.getLogger().addHandler(warnings)
    logging.getLogger().setLevel(logging.INFO)
    convert.subprocess.run = fake_run
    os.environ["HOME"] = spec["home"]
    os.environ.pop("XDG_CACHE_HOME", None)
    os.setgroups(spec["groups"])
    os.setresgid(spec["gid"], spec["gid"], spec["gid"])
    os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    os.umask(spec["umask"])
    home = Path(spec["home"])
    # Where the service keeps it (the weights' own folder is not the service's to write)
    tflite = home / ".cache" / "labels" / "tflite" / f"{weights.name}.{MODEL}.{PRECISION}.{checksum[:16]}.tflite"
    result: dict = {}
    step = spec["step"]
    if step == "service":  # the service's start: the cached model, or converted now
        served = convert.ensure_tflite(weights, checksum, MODEL, PRECISION)
        result.update(path=str(served), served=served.read_bytes().decode(errors="replace"))
    elif step == "old labelsd":  # what labelsd made before: 2770 folders, 0660 files
        tflite.parent.mkdir(parents=True, exist_ok=True)
        for folder in (home / ".cache", home / ".cache" / "labels", tflite.parent):
            folder.chmod(0o2770)
        tflite.write_bytes(GENUINE)
        write_record(tflite, GENUINE, weights, checksum)
        for path in (tflite, tflite.with_name(tflite.name + ".json")):
            path.chmod(0o660)
    elif step == "member tries":
        result["tried"] = attempts(tflite)
    elif step == "member swaps the model":  # the file and its record, where it can
        tflite.write_bytes(EVIL)
        write_record(tflite, EVIL, weights, checksum)
    elif step == "member swaps the folder":  # the state folder is the group's to write
        os.rename(home / ".cache", home / ".cache-moved")
        tflite.parent.mkdir(parents=True)
        tflite.write_bytes(EVIL)
        write_record(tflite, EVIL, weights, checksum)
    result.update(conversions=len(CONVERSIONS), warnings=warnings.lines, modes=modes(home / ".cache"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
