"""The models side by side (`throughput.py --model A --model B`), every figure from one run.

For each model, on the same 12 MP JPEGs: the bare forward over pre-decoded batches,
`labels scan`'s pipeline, and the real `labelsd` service (both services started
first and left idle, then bursts interleaved between them, best kept); plus the
decode ceiling: how fast reading, hashing and decoding alone could go on these
cores, which bounds any model's pipeline on a CPU.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

GOAL_LITE_VS_INCEPTION = 2.0  # service burst, efficientnet_lite0 / inception_v3


def model_weights(model: str, args, cache: Path) -> Path:
    """The file each model's service is given: InceptionV3's (random unless --weights;
    speed does not depend on them), Lite0's real ones from its package."""
    if model == "inception_v3":
        from benchkit import random_weights

        return args.weights or random_weights(cache)
    from labelsd.model.registry import get_model

    checked = get_model(model).check_weights(None)
    return Path(checked[0])


def decode_seconds(classifier, photos: list[Path]) -> float:
    """Read + SHA-256 + decode of one photo, on one thread, for this model's input."""
    from labelsd.pipeline.reader import read_file

    start = time.perf_counter()
    for path in photos:
        classifier.decode(read_file(str(path))[0])
    return (time.perf_counter() - start) / len(photos)


def compare_models(models: list[str], args, photos: list[Path], burst_sets: list[list[Path]]) -> int:
    from benchkit import bench_bare, bench_pipeline
    from labelsd.model.classifier import load_classifier
    from servicebench import BenchService

    cores = len(os.sched_getaffinity(0))
    loaded = {}
    for model in models:
        weights = model_weights(model, args, args.cache)
        loaded[model] = (weights, load_classifier(weights, device=args.device,
                                                  batch_size=args.batch_size, model=model))
    first = loaded[models[0]][1]
    print(f"{len(photos)} JPEGs, models {', '.join(models)}, {cores} cores, device "
          f"{first.device}, batch size {first.batch_size}; load average "
          f"{os.getloadavg()[0]:.2f} at start", flush=True)
    figures = {m: {"bare": 0.0, "pipeline": 0.0, "decode_s": float("inf"), "burst": 0.0}
               for m in models}
    for round_no in range(1, args.rounds + 1):
        for model in models:
            classifier, f = loaded[model][1], figures[model]
            f["decode_s"] = min(f["decode_s"], decode_seconds(classifier, photos))
            f["bare"] = max(f["bare"], bench_bare(classifier, photos, classifier.batch_size))
            f["pipeline"] = max(f["pipeline"], bench_pipeline(
                classifier, photos, classifier.batch_size, args.cache, args.decode_workers))
        print(f"round {round_no}: " + "; ".join(
            f"{m} bare {figures[m]['bare']:.2f}, pipeline {figures[m]['pipeline']:.2f}"
            for m in models) + " img/s (best so far)", flush=True)
    batch_size = str(first.batch_size)
    device = "gpu" if first.on_gpu else "cpu"
    loaded.clear()

    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        services = {}
        try:
            for number, model in enumerate(models):
                weights = model_weights(model, args, args.cache)
                # a short folder name: the notify socket's path must fit in 108 bytes
                services[model] = BenchService(Path(tmp) / str(number), weights, (
                    "--device", device, "--batch-size", batch_size, "--model", model))
                ready = services[model].start_until_ready()
                print(f"{model}: service ready in {ready:.1f} s", flush=True)
            for round_no, burst in enumerate(burst_sets, start=1):
                for model in models:  # the other service sits idle meanwhile (inotify)
                    ips = services[model].burst(burst)
                    figures[model]["burst"] = max(figures[model]["burst"], ips)
                    print(f"burst {round_no}: {model} {ips:.2f} img/s", flush=True)
        finally:
            for svc in services.values():
                svc.stop()

    print()
    print(f"== models (one run; load average {os.getloadavg()[0]:.2f} at the end) ==")
    for model in models:
        f = figures[model]
        ceiling = cores / f["decode_s"]
        print(f"{model:20} bare forward {f['bare']:6.2f} img/s, pipeline (scan) {f['pipeline']:6.2f}, "
              f"service burst {f['burst']:6.2f}; decode ceiling {ceiling:.2f} img/s "
              f"({1000 * f['decode_s']:.0f} ms/photo on one core, {cores} cores; "
              f"service at {f['burst'] / ceiling:.0%} of it)")
    if {"inception_v3", "efficientnet_lite0"} <= set(models):
        ratio = figures["efficientnet_lite0"]["burst"] / figures["inception_v3"]["burst"]
        bare = figures["efficientnet_lite0"]["bare"] / figures["inception_v3"]["bare"]
        print(f"service efficientnet_lite0/inception_v3: {ratio:.2f}x (goal >= "
              f"{GOAL_LITE_VS_INCEPTION}x: {'met' if ratio >= GOAL_LITE_VS_INCEPTION else 'MISSED'}); "
              f"bare forward {bare:.2f}x")
    return 0
