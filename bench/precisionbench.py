"""Precision rows for bench/throughput.py: each precision beside TensorFlow fp32, in one run.

For every precision asked for (`--precisions fp32,bf16,int8`), loaded the way the
service loads it (labelsd.model.runtime: LiteRT for fp32 and int8, TensorFlow for
bf16), on the CPU:
  - bare forward img/s over the same pre-decoded 12 MP photos, interleaved rounds,
    best kept, and its ratio to TensorFlow fp32 (today's path);
  - top-1 agreement with TensorFlow fp32 and the smallest top-3 overlap, on
    scikit-image's bundled photos and the bench's own (meaningful with real weights
    only: random weights put every photo in one class);
  - a fresh process that loads the model: seconds to ready and its RSS, for each
    runtime (TensorFlow fp32 included);
  - the real service with --precision P: start to READY=1, RSS at rest (after the bursts
    of 12 MP photos, once idle), the best burst's img/s and its decode-bound ceiling.
    A burst ends at the commit of its last label (servicebench.last_classified). On a
    shared machine a ceiling measured a minute earlier meets other neighbours than the
    burst, so each burst is also set beside a ceiling measured just before it, and its CPU
    per photo beside the ceiling's (decode + the model's share; neighbours hardly move it).
Then `auto` (bench/autobench.py): what it chose on this CPU, by its own measurement, what that
measurement cost, and the service with defaults as one more row.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GOAL_AUTO_AMX = 2.5       # auto's forward / fp32 on a CPU with AMX
GOAL_SERVICE_CEILING = 0.9
GOAL_REST_MIB = 400       # LiteRT service at rest
GOAL_READY_LITERT_S = 2.0


def _decoded(classifier, photos: list[Path]) -> np.ndarray:
    """The photos as the model's input (its size, its preprocessing)."""
    from fidelitybench import real_pictures

    blobs = real_pictures() + [p.read_bytes() for p in photos]
    return np.stack([classifier.decode(b).pixels for b in blobs])


def agreement(reference: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """(share of photos with the same top-1, smallest top-3 overlap over the photos)."""
    top1 = float(np.mean(reference.argmax(1) == probs.argmax(1)))
    ref3, our3 = np.argsort(-reference, 1)[:, :3], np.argsort(-probs, 1)[:, :3]
    return top1, min(len(set(a) & set(b)) for a, b in zip(ref3, our3))


def _forward_ips(classifier, batches: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for batch in batches:
        classifier.forward(classifier.pad(batch))
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


_LOADER = """
import re, sys, time
start = time.perf_counter()
weights, precision, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
if precision == "tf-fp32":
    from labelsd.model.classifier import load_classifier
    load_classifier(weights, "cpu", batch)
else:
    from labelsd.model.runtime import load_model
    load_model(weights, "cpu", batch, precision)
ready = time.perf_counter() - start
status = open("/proc/self/status").read()
kib = lambda key: int(re.search(key + r":\\s+(\\d+)", status)[1])
print(ready, kib("VmRSS"), kib("VmHWM"), "tensorflow" in sys.modules)
"""


def load_in_fresh_process(weights: Path, precision: str, batch_size: int) -> dict:
    """Seconds to a loaded, warm model and the RSS then, in a process of its own."""
    proc = subprocess.run([sys.executable, "-c", _LOADER, str(weights), precision, str(batch_size)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        sys.exit(f"loading {precision} in a fresh process failed:\n{proc.stderr[-2000:]}")
    ready, rss, hwm, tf = proc.stdout.split()[-4:]
    return {"ready_s": float(ready), "rss_mib": int(rss) / 1024, "hwm_mib": int(hwm) / 1024,
            "tensorflow": tf == "True"}


def burst_sets(photos: list[Path], rounds: int, cache: Path) -> list[list[Path]]:
    """`photos` and rounds - 1 more sets like them (a service links the same bytes again)."""
    from benchkit import make_photos

    return [photos] + [make_photos(cache / f"burst{n}-4000x3000-{len(photos)}", len(photos), (4000, 3000),
                                   seed_base=30_000 + 1_000 * n) for n in range(1, rounds)]


def decode_s_now(classifier, photos: list[Path]) -> tuple[float, float]:
    """(wall, CPU) seconds of read + hash + decode of one photo on one thread, now (as
    throughput.bench_bare measures it)."""
    from labelsd.pipeline.reader import read_file

    start, cpu = time.perf_counter(), time.thread_time()
    for p in photos:
        classifier.decode(read_file(str(p))[0])
    return (time.perf_counter() - start) / len(photos), (time.thread_time() - cpu) / len(photos)


def ceiling_beside(classifier, batches: list[np.ndarray], photos: list[Path], cores: int) -> tuple[float, float]:
    """(the decode-bound ceiling in img/s, the CPU seconds per photo it assumes: decode plus
    the model's share), from a bare forward and a decode measured now, beside a burst. The
    CPU figure barely moves with neighbours' load, unlike the wall-clock ones."""
    cpu = time.process_time()  # this process runs nothing else meanwhile
    bare = _forward_ips(classifier, batches)
    model_cpu = (time.process_time() - cpu) / sum(len(b) for b in batches)
    decode_wall, decode_cpu = decode_s_now(classifier, photos)
    return 1 / (1 / bare + decode_wall / cores), decode_cpu + model_cpu


def service_rows(weights: Path, workdir: Path, bursts: list[list[Path]], precision: str,
                 batch_size: int, ceiling_now=None) -> dict:
    """Start to READY, the best of the bursts (as the bare forward is the best of its rounds:
    a neighbour's work during one burst must not decide the figure), then RSS at rest.
    `ceiling_now()`, when given, measures the decode-bound ceiling again just before each
    burst, so that burst and ceiling see the same neighbours (out["beside"]: img/s, ceiling,
    the service's CPU seconds per photo and the ceiling's, per burst)."""
    from servicebench import BenchService

    svc = BenchService(workdir, weights, ("--device", "cpu", "--precision", precision,
                                          "--batch-size", str(batch_size)))
    try:
        out = {"ready_s": svc.start_until_ready(), "beside": []}
        for photos in bursts:
            svc.wait_idle()  # the burst before is written: its tail is not this ceiling's load
            ceiling, ideal_cpu = ceiling_now() if ceiling_now is not None else (None, None)
            cpu = svc.cpu_seconds()
            ips = svc.burst(photos)
            out["beside"].append((ips, ceiling, (svc.cpu_seconds() - cpu) / len(photos), ideal_cpu))
        out["burst_ips"] = max(b[0] for b in out["beside"])
        # At rest: no CPU for longer than the pipeline's idle poll (claimer.IDLE_WAIT_S), after
        # which it hands the decode buffers back (pipeline/memory.py)
        svc.wait_idle(quiet_s=2.0, timeout=60)
        status = Path(f"/proc/{svc.service.pid}/status").read_text()
        out["rest_mib"] = int(next(line for line in status.splitlines()
                                   if line.startswith("VmRSS:")).split()[1]) / 1024
        out["peak_mib"] = svc.peak_rss_bytes() / 2**20
        out["failed"] = svc.failed()
    finally:
        svc.stop()
    return out


def run(reference, weights: Path, photos: list[Path], precisions: list[str], batch_size: int,
        rounds: int, cores: int, cache: Path, ceiling_ratio, decode_ms: float | None = None) -> None:
    """Print the precision table. `reference` is the bench's TensorFlow fp32 classifier;
    `ceiling_ratio(bare_ips)` is throughput.pipeline_ceiling for the CPU; `decode_ms` the
    read + hash + decode of one photo on one core that it assumes."""
    from labelsd.model import precision as prec
    from labelsd.model.runtime import load_model, runtime_kind

    flags = prec.cpu_flags()
    shown = sorted(f for f in flags if f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx2", "avx512f"))
    print(f"\n== precisions on {prec.cpu_model()} ({cores} cores; {', '.join(shown)}) ==", flush=True)
    pixels = _decoded(reference, photos)
    n_named = len(pixels) - len(photos)
    ref_probs = reference.predict(pixels)
    bench_pixels = pixels[n_named:]
    batches = [bench_pixels[i:i + batch_size] for i in range(0, len(bench_pixels), batch_size)]

    models = {"tf-fp32": reference}
    for p in precisions:
        # The forward on all the cores (the service's LiteRT leaves half to its decoders):
        # the bare figure, and the ceiling's model term, are the model's best
        models[p] = load_model(weights, "cpu", batch_size, p, warm=True, threads=cores)
    speeds = {name: 0.0 for name in models}
    for _ in range(rounds):  # interleaved, best kept: a neighbour's burst penalises no one row
        for name, clf in models.items():
            speeds[name] = max(speeds[name], _forward_ips(clf, batches))
    base = speeds["tf-fp32"]
    print(f"agreement over {len(pixels)} photos ({n_named} scikit-image, {len(photos)} bench; "
          "with random weights every photo lands in one class, so 1.00 says little)")
    rows = {}
    for name, clf in models.items():
        top1, top3 = agreement(ref_probs, clf.predict(pixels))
        runtime = runtime_kind(clf)
        rows[name] = (runtime, speeds[name], top1, top3)
        print(f"  {name:8} {runtime:10} forward {speeds[name]:6.2f} img/s  {speeds[name] / base:4.2f}x fp32  "
              f"top-1 agreement {top1:.2f}  top-3 overlap >= {top3}/3", flush=True)
    del models
    import autobench

    choice = autobench.measure(weights, batch_size)
    autobench.against_the_rule_before(speeds, choice.precision, flags)
    if choice.precision in speeds:
        goal = (f"goal >= {GOAL_AUTO_AMX}x" if "amx_bf16" in flags else "goal >= 1.00x (no AMX here)")
        print(f"  auto's {choice.precision} in this bench's rows: {speeds[choice.precision] / base:.2f}x "
              f"TensorFlow fp32, {goal}", flush=True)
    rows["auto"] = rows.get(choice.precision, ("litert", base, 0.0, 0))
    from fidelitybench import run as bench_fidelity

    bench_fidelity(weights, reference.name == "InceptionV3/imagenet", precisions, batch_size, rounds)

    print("fresh process, load + warm-up (both runtimes; auto reads its kept measurement):")
    for name in ["tf-fp32", *precisions, "auto"]:
        got = load_in_fresh_process(weights, name, batch_size)
        print(f"  {name:8} ready {got['ready_s']:5.1f} s, RSS {got['rss_mib']:5.0f} MiB "
              f"(peak {got['hwm_mib']:.0f}), TensorFlow imported: {got['tensorflow']}", flush=True)

    bursts = burst_sets(photos, rounds, cache)
    print(f"the service, --device cpu --precision P (best of {len(bursts)} bursts of {len(photos)} 12 MP photos, "
          f"then at rest; auto: the defaults, which run {choice.precision} here):")
    decode = f"{decode_ms:.0f} ms" if decode_ms is not None else "its time"
    print(f"  decode-bound ceiling = 1 / (1 / bare forward + read+hash+decode per photo / cores): the model "
          f"(this row's bare img/s, on all {cores} cores) and decoding each photo ({decode} on one core, the "
          "service's own JPEG draft-mode decode) sharing the cores with no time lost between them")
    for p in [*precisions, "auto"]:
        clf = load_model(weights, "cpu", batch_size, p, warm=True, threads=cores)

        def ceiling_now(clf=clf) -> tuple[float, float]:
            return ceiling_beside(clf, batches, photos[:8], cores)

        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            svc = service_rows(weights, Path(tmp), bursts, p, batch_size, ceiling_now)
        del clf
        runtime, bare = rows[p][0], rows[p][1]
        ceiling = ceiling_ratio(bare) * bare
        goals = f"ceiling goal >= {GOAL_SERVICE_CEILING}"
        if p == "auto":
            goals += "; " + autobench.service_goals(flags, svc["ready_s"], svc["rest_mib"])
        elif runtime == "litert":
            goals += f"; at rest goal <= {GOAL_REST_MIB} MiB, ready goal <= {GOAL_READY_LITERT_S} s"
        print(f"  {p:5} {runtime:10} READY {svc['ready_s']:5.1f} s, at rest {svc['rest_mib']:5.0f} MiB "
              f"(peak {svc['peak_mib']:.0f}), burst {svc['burst_ips']:5.2f} img/s of a decode-bound "
              f"ceiling {ceiling:5.2f} ({svc['burst_ips'] / ceiling:.2f}; {goals}), "
              f"{svc['failed']} failed", flush=True)
        beside = svc["beside"]
        ratios = sorted(b[0] / b[1] for b in beside)
        print(f"        each burst against the ceiling measured just before it (same neighbours; load "
              f"{os.getloadavg()[0]:.1f}): " + ", ".join(f"{b[0]:.2f} of {b[1]:.2f}" for b in beside)
              + f"; best {ratios[-1]:.2f}, median {ratios[len(ratios) // 2]:.2f}", flush=True)
        print("        CPU per photo, service / ceiling's (decode + model; what neighbours' load hardly moves): "
              + ", ".join(f"{1000 * b[2]:.0f}/{1000 * b[3]:.0f} ms" for b in beside)
              + f"; CPU efficiency (the ceiling's / the service's) {min(b[3] / b[2] for b in beside):.2f}"
              f"-{max(b[3] / b[2] for b in beside):.2f}", flush=True)
