"""The precision the model runs at on a CPU: what the CPU can do, and the `auto` rule.

`fp32` is always there; `bf16` runs Keras's convolutions (but the first) in bfloat16
and the rest in float32 (keras_runtime.BF16_RECIPE), which oneDNN turns into AMX or
AVX512-BF16 instructions where the CPU has them (and into slow emulation where it has
neither); `int8` is LiteRT's dynamic-range quantised model (labelsd.model.quantize),
opt-in only, because quantisation moves scores (its fidelity is measured in
tests/test_precision.py and bench/throughput.py, not assumed).

`auto` on a CPU picks bf16 only where the CPU has AMX or AVX512-BF16 AND the
forward measured faster with it than fp32 (by MIN_BF16_GAIN), else fp32. The
measurement runs once per CPU model, model and batch size, in a child process (it
builds the model twice; speed does not depend on the weights, so they are no key), and
its result is kept in the user's cache, so later starts read one small file. On a
GPU, `auto` keeps what the GPU path does (mixed float16 from compute capability 7).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labelsd.config import PRECISIONS
from labelsd.errors import ConfigError
from labelsd.owned import Untrusted, cache_dir, read_json, write_json
from labelsd.paths import shown

log = logging.getLogger(__name__)

# bf16 must beat fp32 by this much to be picked: a tie is noise, and fp32 also lets
# the lighter LiteRT runtime serve the model.
MIN_BF16_GAIN = 1.15
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MEASURE_TIMEOUT_S = 600
MEASURE_ROUNDS = 3


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags (`flags` on x86; empty where there is no such line)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return "unknown CPU"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def bf16_hardware(flags: frozenset[str]) -> str | None:
    """'amx_bf16' or 'avx512_bf16' (the best the CPU has for bf16), None without either."""
    return next((flag for flag in BF16_FLAGS if flag in flags), None)


@dataclass(frozen=True)
class Choice:
    precision: str  # fp32 | bf16 | int8 (on a GPU: "gpu-default" for the GPU's own rule)
    reason: str


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def choose_cpu_precision(requested: str, flags: frozenset[str], measure) -> Choice:
    """The precision a CPU runs at. `measure()` -> {"fp32": img/s, "bf16": img/s} (or None
    where it could not measure) is called only for `auto` on a CPU with bf16 hardware."""
    check_precision(requested)
    hardware = bf16_hardware(flags)
    if requested != "auto":
        if requested == "bf16" and hardware is None:
            log.warning("--precision bf16 on a CPU with neither AMX nor AVX512-BF16: "
                        "bfloat16 is emulated there and slower than fp32")
        return Choice(requested, "asked for")
    if hardware is None:
        return Choice("fp32", "auto: the CPU has neither AMX nor AVX512-BF16")
    speeds = measure()
    if speeds is None:
        return Choice("fp32", f"auto: {hardware}, but bf16 could not be measured")
    gain = speeds["bf16"] / speeds["fp32"]
    figures = f"{speeds['bf16']:.1f} vs {speeds['fp32']:.1f} img/s, {gain:.2f}x"
    if gain >= MIN_BF16_GAIN:
        return Choice("bf16", f"auto: {hardware} and bf16 measured faster ({figures})")
    return Choice("fp32", f"auto: {hardware}, but bf16 measured no faster ({figures})")


# --------------------------------------------------------------------------- measuring


def measurement_cache() -> Path:
    return cache_dir() / "precision.json"


def _measurement_key(model: str, batch_size: int, flags: frozenset[str]) -> str:
    """The CPU, model, batch size and how bf16 runs (keras_runtime.BF16_RECIPE): a figure
    measured with another recipe (an older labelsd) is measured again."""
    from labelsd.model.keras_runtime import BF16_RECIPE

    return (f"{cpu_model()}|{bf16_hardware(flags)}|{len(os.sched_getaffinity(0))} cores|{model}|"
            f"batch {batch_size}|{BF16_RECIPE}")


def known_speeds(model: str, batch_size: int, flags: frozenset[str],
                 cache: Path | None = None) -> dict[str, float] | None:
    """The kept measurement for this CPU, model and batch size, or None (nothing measured)."""
    entry = read_json(cache or measurement_cache()).get(_measurement_key(model, batch_size, flags))
    return {"fp32": float(entry["fp32"]), "bf16": float(entry["bf16"])} if _valid(entry) else None


def _valid(speeds) -> bool:
    return isinstance(speeds, dict) and all(
        isinstance(speeds.get(p), (int, float)) and speeds[p] > 0 for p in ("fp32", "bf16"))


def measured_speeds(model: str, batch_size: int, flags: frozenset[str], weights=None,
                    cache: Path | None = None) -> dict[str, float] | None:
    """{"fp32": img/s, "bf16": img/s} of the Keras forward on this CPU: from the cache,
    else measured now in a child process (which imports TensorFlow; this one need not).
    None where the child failed (nothing is kept: the next start tries again)."""
    cache = cache or measurement_cache()
    known = known_speeds(model, batch_size, flags, cache)
    if known:
        return known
    log.info("measuring fp32 against bf16 on this CPU once (%s, batch %d); the result is "
             "kept in %s", model, batch_size, shown(cache))
    cmd = [sys.executable, "-m", "labelsd.model.precision", model, str(batch_size)]
    cmd += [str(weights)] if weights else []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MEASURE_TIMEOUT_S)
        speeds = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        speeds = None
        proc = None
    if not _valid(speeds):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1] if proc else "timed out"
        log.info("could not measure bf16 (%s): fp32 it is", tail)
        return None
    known = read_json(cache)
    known[_measurement_key(model, batch_size, flags)] = speeds
    try:
        write_json(cache, known, indent=1)
    except (OSError, Untrusted) as err:  # a read-only home: measure again next time, nothing worse
        log.info("cannot keep the measurement in %s (%s)", shown(cache), getattr(err, "strerror", None) or err)
    return speeds


def _measure_in_this_process(model: str, batch_size: int, weights: str | None) -> dict[str, float]:
    """Best-of-MEASURE_ROUNDS forward speed of the model, fp32 then bf16."""
    import numpy as np

    from labelsd.model.device import configure_device, tensorflow_starting
    from labelsd.model.keras_runtime import keep_float32_outside_convs
    from labelsd.model.registry import get_model

    spec = get_model(model)
    checked = spec.check_weights(weights)
    with tensorflow_starting():
        import keras
        import tensorflow as tf

        configure_device(tf, "cpu")  # the service's CPU threads, so the figures are its
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (batch_size, *spec.input_shape)), tf.float32)
    speeds = {}
    for precision, policy in (("fp32", "float32"), ("bf16", "mixed_bfloat16")):
        keras.mixed_precision.set_global_policy(policy)
        net = spec.build_network(weights, checked).model
        if policy == "mixed_bfloat16":
            keep_float32_outside_convs(net)  # as the service runs bf16
        forward = tf.function(lambda x, net=net: net(x, training=False))
        forward(x)  # trace
        best = float("inf")
        for _ in range(MEASURE_ROUNDS):
            start = time.perf_counter()
            forward(x).numpy()
            best = min(best, time.perf_counter() - start)
        speeds[precision] = batch_size / best
    return speeds


if __name__ == "__main__":  # the child of measured_speeds: MODEL BATCH_SIZE [WEIGHTS] -> one JSON line
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(_measure_in_this_process(sys.argv[1], int(sys.argv[2]),
                                              sys.argv[3] if len(sys.argv) > 3 else None)))
