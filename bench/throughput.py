"""labelsd's speed, memory and start-up, every figure and ratio from ONE run.

    .venv/bin/python bench/throughput.py [--quick] [--weights FILE] [--batch-size N]
                                         [--device auto|cpu|gpu] [--images N]
                                         [--model inception_v3 --model efficientnet_lite0]

With --model (one or more), the models side by side instead (bench/models.py):
bare forward, pipeline, service burst and the decode ceiling of each, one run.

On the same 12 MP phone-sized JPEGs (generated once, cached):
  (a) seed loop (keras load_img + preprocess_input + model.predict, one image at a
      time, in a fresh process with TensorFlow's default threads, as it shipped)
      vs `labels scan`'s pipeline (scan_folder on a fresh SQLite store: read, hash,
      decode, batch, classify, write) vs the bare compiled forward over pre-decoded
      batches, interleaved rounds, best kept; plus a timeline of one pipeline run
      (is the model ever idle during the burst?) and the ceiling that decoding on
      the same cores leaves the pipeline;
then the real `labelsd` service as a subprocess (bench/servicebench.py):
  (b) bursts of phone photos renamed into its watched folder (staged beside it first,
      as sync tools deliver files), until the last label is committed (as many bursts
      as rounds, each with photos of its own, best kept);
  (c) single drops: one photo at a time moved into the idle service's folder,
      move to `done` (the database polled every 10 ms), p50/p95 against one
      forward pass (batch 1) + 0.3 s;
  (d) peak RSS (VmHWM) after a burst of small real JPEGs (640x480);
  (e) idle CPU seconds per minute;
  (f) process start to READY=1 (sd_notify on a NOTIFY_SOCKET of our own).
--quick (CI): 8 photos, 1 round, 3 drops, a 100-image burst: about 1.5 minutes.
Without --weights a random-weights InceptionV3 file is built (the ImageNet
weights cannot be downloaded everywhere); speed does not depend on the weights.
The device and batch size are the service's defaults (--device auto: the GPU
when TensorFlow sees one, batch 32 there and 8 on the CPU) unless given; the
service under (b)-(f) runs with the same. On a GPU the model no longer shares
the cores with decoding, so the ceiling printed under (a) is then the decoders'.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from benchkit import (  # bench/ is on sys.path: the script's own folder
    DECODE_S,
    bench_bare,
    bench_pipeline,
    cpu_line,
    forward_one_s,
    make_photos,
    pipeline_ceiling,
    random_weights,
)
from seedloop import bench_seed, bench_seed_shipped, forget_seed_models
from stagebench import bench_metadata, bench_timeline

GOAL_VS_SEED = 2.5
GOAL_VS_BARE = 0.9
GOAL_DROP_OVER_FORWARD_S = 0.3  # single-drop p50 <= one forward (batch 1) + this
GOAL_RSS_GIB = 2.5
GOAL_IDLE_CPU_S = 1.0  # CPU seconds per idle minute
GOAL_READY_S = 20.0



def gpu_note(classifier) -> str:
    """Which device these figures are for, and whether this machine has a GPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return ("no GPU on this machine: CPU figures only (on a GPU labelsd runs "
                "batch 32, mixed precision, XLA, decode workers = cores)")
    if not classifier.on_gpu:
        return f"{len(gpus)} GPU(s) visible, but these figures are the CPU's (--device cpu)"
    return f"GPU figures ({len(gpus)} visible; the model on the first)"


def bench_service(weights: Path, cache: Path, workdir: Path, photos: list[Path], quick: bool,
                  drops: int, burst: int, idle_s: float, service_args: tuple[str, ...],
                  rounds: int = 1) -> dict:
    """(b)-(f): the real labelsd subprocess, measured from outside."""
    from servicebench import BenchService, percentile

    drop_photos = make_photos(cache / f"drops-4000x3000-{drops}", drops, (4000, 3000),
                              seed_base=10_000)
    small = make_photos(cache / f"small-640x480-{burst}", burst, (640, 480), seed_base=20_000)
    svc = BenchService(workdir, weights, service_args)
    out = {}
    try:
        out["ready_s"] = svc.start_until_ready()
        print(f"(f) start to READY: {out['ready_s']:.1f} s", flush=True)
        out["drops"] = svc.single_drops(drop_photos)
        print("(c) single drops, s: " + " ".join(f"{s:.2f}" for s in out["drops"]), flush=True)
        out["drop_p50"] = percentile(out["drops"], 50)
        out["drop_p95"] = percentile(out["drops"], 95)
        # Like (a), the best of `rounds` bursts: one burst lasts a few seconds, and a
        # neighbour's work in those seconds would decide the figure. Each round
        # takes photos of its own (the same bytes again would only be linked).
        bursts = []
        for round_no in range(rounds):
            batch = photos if round_no == 0 else make_photos(
                cache / f"burst{round_no}-4000x3000-{len(photos)}", len(photos), (4000, 3000),
                seed_base=30_000 + 1_000 * round_no)
            bursts.append(svc.burst(batch))
            print(f"(b) {len(batch)}-photo burst {round_no + 1}: {bursts[-1]:.2f} img/s", flush=True)
        out["burst_ips"] = max(bursts)
        out["idle_cpu_per_min"] = svc.idle_cpu_per_minute(idle_s)
        print(f"(e) idle: {out['idle_cpu_per_min']:.2f} CPU s/min over {idle_s:.0f} s", flush=True)
        out["small_burst_ips"] = svc.burst(small)
        out["peak_rss"] = svc.peak_rss_bytes()
        out["failed"] = svc.failed()
        print(f"(d) {len(small)}-image 640x480 burst: {out['small_burst_ips']:.1f} img/s, "
              f"peak RSS {out['peak_rss'] / 2**30:.2f} GiB", flush=True)
    finally:
        svc.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test for CI: 8 photos, 3 drops, a 100-image burst")
    parser.add_argument("--weights", type=Path, help="InceptionV3 weights file")
    parser.add_argument("--batch-size", type=int,
                        help="default: the service's (8 on the CPU, 32 on a GPU)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                        help="as labelsd's --device (default auto)")
    parser.add_argument("--decode-workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--images", type=int, help="how many phone photos (default 32, quick 8)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds, best kept (default 3, quick 1)")
    parser.add_argument("--drops", type=int, help="single drops timed (default 10, quick 3)")
    parser.add_argument("--burst", type=int, help="small images in the memory burst "
                                                  "(default 1000, quick 100)")
    parser.add_argument("--idle-seconds", type=float, default=20.0,
                        help="idle window for the CPU figure, seconds (default 20)")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "labelsd-bench",
                        help="where the generated photos and weights are kept between runs")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated precisions to run beside TensorFlow fp32 (fp32 on LiteRT, "
                             "bf16, int8; default all three, none with --quick; '' for none)")
    parser.add_argument("--only-precisions", action="store_true",
                        help="skip (a)-(f) but one bare round (for the decode cost): the precision rows only")
    parser.add_argument("--model", action="append", choices=("inception_v3", "efficientnet_lite0"),
                        help="compare these models instead (repeat: --model inception_v3 "
                             "--model efficientnet_lite0)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING)
    print(cpu_line(), flush=True)
    args.rounds = args.rounds or (1 if args.quick else 3)
    count = args.images or (8 if args.quick else 32)
    drops = args.drops or (3 if args.quick else 10)
    burst = args.burst or (100 if args.quick else 1000)
    size = (4000, 3000)  # 12 MP phone photos, quick or not: decode cost is what is measured
    photos = make_photos(args.cache / f"photos-{size[0]}x{size[1]}-{count}", count, size)
    if args.model:
        from models import compare_models

        bursts = [photos] + [make_photos(args.cache / f"burst{n}-4000x3000-{count}", count, size,
                                         seed_base=30_000 + 1_000 * n) for n in range(1, args.rounds)]
        return compare_models(list(dict.fromkeys(args.model)), args, photos, bursts)

    # The classifier first: its thread settings only apply before TensorFlow starts.
    from labelsd.model.classifier import load_classifier

    weights = args.weights or random_weights(args.cache)
    classifier = load_classifier(weights, device=args.device, batch_size=args.batch_size)
    args.batch_size = classifier.batch_size
    on_gpu = classifier.on_gpu
    # On the CPU the service runs fp32 (LiteRT where installed: about TensorFlow fp32's speed, see
    # the precision rows), not auto, which would measure bf16 in each fresh service's cache.
    service_args = ("--device", "gpu" if on_gpu else "cpu", "--batch-size", str(args.batch_size),
                    "--precision", "auto" if on_gpu else "fp32")
    cores = len(os.sched_getaffinity(0))
    print(f"{count} JPEGs {size[0]}x{size[1]}, batch size {args.batch_size}, "
          f"{cores} cores, device {classifier.device}; {gpu_note(classifier)}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at start", flush=True)

    if not on_gpu:  # the service converts the model for LiteRT at its first start only: do it here
        from labelsd.model.runtime import load_model

        start = time.perf_counter()
        load_model(weights, "cpu", args.batch_size, "fp32", warm=False)
        print(f"converted for LiteRT (or found converted) in {time.perf_counter() - start:.1f} s", flush=True)
    if args.only_precisions:
        bare = bench_bare(classifier, photos, args.batch_size)
        from precisionbench import run as bench_precisions

        bench_precisions(classifier, weights, photos, [p for p in (args.precisions or "fp32,bf16,int8").split(",")
                                                       if p], args.batch_size, args.rounds, cores, args.cache,
                         lambda bare_ips: pipeline_ceiling(bare_ips, min(DECODE_S), cores, False),
                         1000 * min(DECODE_S))
        return 0

    # Rounds interleave the three, and each keeps its best round: on a shared
    # machine a neighbour's burst then penalises no one method.
    bare = pipeline = seed = seed_tuned = 0.0
    for round_no in range(1, args.rounds + 1):
        bare = max(bare, bench_bare(classifier, photos, args.batch_size))
        pipeline = max(pipeline, bench_pipeline(classifier, photos, args.batch_size,
                                                args.cache, args.decode_workers))
        seed_tuned = max(seed_tuned, bench_seed(weights, photos))
        seed = max(seed, bench_seed_shipped(weights, photos))
        print(f"round {round_no}: best so far bare {bare:.2f}, pipeline {pipeline:.2f}, "
              f"seed {seed:.2f} (with labelsd's TF threads {seed_tuned:.2f}) img/s", flush=True)
    tl = bench_timeline(classifier, photos, args.batch_size, args.cache, args.decode_workers)
    meta_s = bench_metadata(photos[0], args.cache)
    one = forward_one_s(classifier)
    forget_seed_models()

    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        svc = bench_service(weights, args.cache, Path(tmp), photos, args.quick, drops, burst,
                            args.idle_seconds, service_args, args.rounds)

    latency_goal = one + GOAL_DROP_OVER_FORWARD_S
    decode_s = min(DECODE_S)
    ceiling = pipeline_ceiling(bare, decode_s, cores, on_gpu)
    print()
    print(f"== figures (one run; load average {os.getloadavg()[0]:.2f} at the end) ==")
    print(f"(a) bare forward:      {bare:6.2f} img/s")
    print(f"(a) pipeline (scan):   {pipeline:6.2f} img/s")
    print(f"(a) seed loop:         {seed:6.2f} img/s (as shipped: TensorFlow's default threads; "
          f"{seed_tuned:.2f} with labelsd's, pipeline/that {pipeline / seed_tuned:.2f}x)")
    print(f"(a) pipeline/seed {pipeline / seed:.2f}x (goal >= {GOAL_VS_SEED}x), "
          f"pipeline/bare {pipeline / bare:.2f}x (goal >= {GOAL_VS_BARE}x)")
    shared = "the decoders alone" if on_gpu else "the model and the decoders"
    print(f"(a) read+hash+decode {1000 * decode_s:.0f} ms/photo on one core: with {cores} "
          f"cores fully busy for {shared} the pipeline can reach at most {ceiling:.2f}x bare "
          f"(measured {pipeline / bare / ceiling:.0%} of that)")
    print(f"(a) photo metadata (EXIF, IPTC, XMP, sidecar): {1000 * meta_s:.2f} ms/photo = "
          f"{meta_s / decode_s:.1%} of read+hash+decode, so at most that much less pipeline "
          f"throughput (goal < 5%; sidecars are written on a thread of their own)")
    print(f"(a) model timeline: busy {100 * tl['busy_fraction']:.0f}% of "
          f"{tl['window_s']:.2f} s, idle {tl['idle_s']:.2f} s, longest gap "
          f"{1000 * tl['longest_gap_s']:.0f} ms, batches {tl['batch_sizes']}, "
          f"decode {tl['decode_ms']:.0f} ms/image")
    print(f"(b) service burst:     {svc['burst_ips']:6.2f} img/s (best of {args.rounds} bursts of {count} photos); "
          f"service/seed {svc['burst_ips'] / seed:.2f}x, service/bare {svc['burst_ips'] / bare:.2f}x")
    print(f"(c) single drop:       p50 {svc['drop_p50']:.2f} s, p95 {svc['drop_p95']:.2f} s "
          f"({drops} drops); one forward (batch 1) {one:.2f} s + "
          f"{GOAL_DROP_OVER_FORWARD_S} s = goal {latency_goal:.2f} s: "
          f"{'met' if svc['drop_p50'] <= latency_goal else 'MISSED'}")
    print(f"(d) peak RSS:          {svc['peak_rss'] / 2**30:.2f} GiB (goal <= {GOAL_RSS_GIB} GiB) "
          f"after a {burst}-image 640x480 burst at {svc['small_burst_ips']:.1f} img/s "
          f"({svc['failed']} failed)")
    print(f"(e) idle CPU:          {svc['idle_cpu_per_min']:.2f} s per minute (goal < {GOAL_IDLE_CPU_S})")
    print(f"(f) start to READY:    {svc['ready_s']:.1f} s (goal <= {GOAL_READY_S} s)")

    if args.precisions is None:
        args.precisions = "" if args.quick or on_gpu else "fp32,bf16,int8"
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if precisions:
        from precisionbench import run as bench_precisions

        bench_precisions(classifier, weights, photos, precisions, args.batch_size, args.rounds, cores,
                         args.cache, lambda bare_ips: pipeline_ceiling(bare_ips, decode_s, cores, False),
                         1000 * decode_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
