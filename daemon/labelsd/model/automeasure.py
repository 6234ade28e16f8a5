"""`precision = auto`'s measurement, made once and kept beside the converted model.

The measurement (labelsd.model.fidelity) runs in the child process that converts the
model for LiteRT, so the service never holds TensorFlow for it. Its result is a small
JSON file beside the `.tflite` files (labelsd.model.convert.cache_folder), named by the
weights file, the model and the weights' checksum as they are, and holding the key it
was measured under: the weights' checksum, the model, the conversion format and each
precision's recipe, the runtimes' versions (TensorFlow, LiteRT), the fidelity set, the
CPU (model, flags, cores) and the batch size. A start whose key differs (other
weights, a new recipe, an upgraded runtime, another machine reading the same folder)
measures again; a start whose key matches reads the file and nothing more. The last
KEPT measurements are kept, each under its key. The file, like the converted models,
is the service's alone (labelsd.owned): one someone else could have written is not
read (a forged measurement would choose the precision), and measured again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from labelsd import owned
from labelsd.errors import LabelsError
from labelsd.model import convert
from labelsd.model.litert import litert_available
from labelsd.model.precision import Measurement, bf16_hardware, cpu_model
from labelsd.paths import shown

log = logging.getLogger(__name__)

MEASURE_FORMAT = 1  # bump when what is measured, or how, changes
KEPT = 4  # measurements kept per weights file and model (other keys: CPU, batch size, versions)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
RUNTIME_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel"),
                    "litert": ("ai-edge-litert", "ai-edge-litert-nightly")}


def record_path(weights_path: Path, checksum: str, model: str) -> Path:
    return convert.cache_folder(weights_path) / f"{weights_path.name}.{model}.auto.{checksum[:16]}.json"


def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def measurement_key(checksum: str, model: str, batch_size: int, flags: frozenset[str]) -> dict:
    from labelsd.model.fidelity import photos_digest
    from labelsd.model.keras_runtime import BF16_RECIPE

    return {"format": MEASURE_FORMAT, "weights_checksum": checksum, "model": model,
            "conversion_format": convert.CONVERSION_FORMAT,
            "recipes": {**convert.RECIPES, "bf16": BF16_RECIPE if bf16_hardware(flags) else None},
            "runtimes": {kind: _version(names) for kind, names in RUNTIME_PACKAGES.items()},
            "litert": litert_available(), "photos": photos_digest(),
            "cpu": [cpu_model(), len(os.sched_getaffinity(0)), sorted(f for f in CPU_FLAGS if f in flags)],
            "batch_size": batch_size}


def _entries(record: Path) -> list:
    entries = owned.read_json(record).get("measurements")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _kept(record: Path, key: dict) -> Measurement | None:
    for entry in _entries(record):
        if entry.get("key") == key:
            try:
                return Measurement.from_json(entry.get("measurement"))
            except ValueError:
                return None
    return None


def _keep(record: Path, key: dict, measurement: Measurement) -> None:
    """The newest first; a few kept, so that a `labels scan --batch-size 4` beside a service
    at 8, or two machines reading one weights folder, do not measure again by turns."""
    others = [e for e in _entries(record) if e.get("key") != key][:KEPT - 1]
    owned.write_json(record, {"measurements": [{"key": key, "measurement": measurement.to_json()}, *others]},
                     indent=1)


def known(spec, weights, checked, batch_size: int, flags: frozenset[str]) -> Measurement | None:
    """The kept measurement for these weights on this CPU, or None; never measures (nor
    fetches: `checked` None checks `weights`, or the model's default file, only where it is)."""
    if checked is None:
        try:
            weights = Path(weights).expanduser() if weights else spec.default_weights()
        except LabelsError:  # a default that cannot even be named (Lite0's package removed)
            return None
        if not weights.is_file():
            return None
        checked = spec.check_weights(weights)
    path, checksum, _ = spec.identify(weights, checked)
    return _kept(record_path(Path(path), checksum, spec.key), measurement_key(checksum, spec.key, batch_size, flags))


def measured(spec, weights, checked, batch_size: int, flags: frozenset[str]) -> Measurement | None:
    """The kept measurement, else measured now in a child (which converts the model for
    LiteRT too, where it is not converted yet). None where it could not be measured
    (said at WARNING; nothing is kept, so the next start tries again)."""
    path, checksum, _ = spec.identify(weights, checked)
    path = Path(path)
    key = measurement_key(checksum, spec.key, batch_size, flags)
    record = record_path(path, checksum, spec.key)
    found = _kept(record, key)
    if found:
        return found
    try:
        # Services started together convert and measure once: the others wait, then read.
        fd = os.open(record.with_name(f".{record.name}.lock"),
                     os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return _kept(record, key) or _measure(spec.key, path, checksum, batch_size, flags, key, record)
    except (OSError, owned.Untrusted) as err:
        log.warning("cannot keep the precision measurement in %s (%s): fp32 it is", shown(record.parent),
                    getattr(err, "strerror", None) or err)
        return None


def _measure(model: str, path: Path, checksum: str, batch_size: int, flags: frozenset[str], key: dict,
             record: Path) -> Measurement | None:
    tmp = f".{os.getpid()}.tmp"
    use, make = {}, {}
    for precision in convert.LITERT_PRECISIONS if litert_available() else ():
        cached = convert.cached_tflite(path, checksum, model, precision)
        if cached:
            use[precision] = cached
        else:
            final = convert.cache_paths(path, checksum, model, precision)[0]
            make[precision] = final.with_name(f".{final.name}{tmp}")
    out = record.with_name(f".{record.name}{tmp}")
    for made in (*make.values(), out):  # the child writes into files of the service's, 0600
        made.unlink(missing_ok=True)
        os.close(os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    cmd = [sys.executable, "-m", "labelsd.model.fidelity", "--weights", str(path), "--model", model,
           "--batch-size", str(batch_size), "--out", str(out)]
    cmd += ["--bf16"] if bf16_hardware(flags) else []
    cmd += [a for p, f in use.items() for a in ("--use", f"{p}={f}")]
    cmd += [a for p, f in make.items() for a in ("--make", f"{p}={f}")]
    log.info("auto: measuring which precision keeps fp32's labels fastest, once for %s (%s), on the "
             "fidelity set%s", shown(path.name), model, f"; converting it to {' and '.join(make)} for LiteRT first"
             if make else "")
    measurement, why = None, "no output"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=convert.CONVERT_TIMEOUT_S,
                              umask=0o077)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        why = lines[-1][:300] if lines else f"exit {proc.returncode}"
        if proc.returncode == 0:
            result = json.loads(out.read_text())
            measurement = Measurement.from_json(result["measurement"])
    except subprocess.TimeoutExpired:
        why = f"it took over {convert.CONVERT_TIMEOUT_S} s"
    except (OSError, ValueError, KeyError, TypeError) as err:  # no answer, or not one it writes
        why = f"its answer: {err}"
    finally:
        out.unlink(missing_ok=True)
    if measurement is None:
        for made in make.values():
            made.unlink(missing_ok=True)
        log.warning("auto: could not measure the precisions (%s): fp32 it is", why)
        return None
    for precision, made in make.items():
        convert.install(made, path, checksum, model, precision)
    log.info("auto: converted in %.0f s, measured in %.1f s", result.get("convert_s", 0), measurement.seconds)
    try:
        _keep(record, key, measurement)
    except (OSError, owned.Untrusted) as err:  # a full disk: this start uses it, the next measures again
        log.warning("cannot keep the precision measurement in %s (%s): the next start measures again",
                    shown(record), err.strerror or err)
    return measurement
