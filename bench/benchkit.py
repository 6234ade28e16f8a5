"""What the benchmarks share: generated photos and weights, the bare forward, the
pipeline, a `labels` command timed with its peak memory, and the machine they ran on.
Imported by the benchmarks (throughput.py, models.py, similarbench.py, web.py...); it
imports none of them (bench/ has no import cycle).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# read + sha256 + decode of one photo, one thread, quiet: one entry per bench_bare call
DECODE_S: list[float] = []


def cpu_line(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU model and the flags that decide labelsd's speed, for every bench's first line:
    figures from machines with other CPUs (AMD with AVX2, Intel with AMX) are not comparable."""
    model, flags = "unknown CPU", set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
    shown = [f for f in wanted if f in flags] or ["none of " + "/".join(wanted)]
    return f"CPU: {model}, {len(os.sched_getaffinity(0))} cores, flags {' '.join(shown)}"


def make_photos(folder: Path, count: int, size: tuple[int, int],
                seed_base: int = 0) -> list[Path]:
    """Camera-like JPEGs (smooth colour fields plus sensor-like noise, quality 90)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"IMG_{seed_base + i:04}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng(seed_base + i)
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC),
                          dtype=np.int16)
        noise = rng.integers(-12, 13, base.shape, dtype=np.int16)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        tmp = path.with_suffix(".tmp")
        Image.fromarray(pixels).save(tmp, "JPEG", quality=90)
        tmp.rename(path)
    return paths


def random_weights(folder: Path) -> Path:
    path = folder / "inception_v3_random.weights.h5"
    if not path.exists():
        import keras

        keras.utils.set_random_seed(1234)
        keras.applications.InceptionV3(weights=None).save_weights(path)
    return path


def bench_pipeline(classifier, photos: list[Path], batch_size: int, workdir: Path,
                   decode_workers: int) -> float:
    from labelsd.pipeline.scan import scan_folder
    from labelsd.store.engine import open_store

    with tempfile.TemporaryDirectory(dir=workdir) as tmp, open_store(f"{tmp}/labels.db") as store:
        start = time.perf_counter()
        result = scan_folder(store, classifier, photos[0].parent, batch_size=batch_size,
                             decode_workers=decode_workers)
        elapsed = time.perf_counter() - start
    if result.labeled != len(photos):
        sys.exit(f"pipeline labeled {result.labeled} of {len(photos)}: {result.summary()}")
    return len(photos) / elapsed


def bench_bare(classifier, photos: list[Path], batch_size: int) -> float:
    from labelsd.pipeline.reader import read_file

    decoded = []
    start = time.perf_counter()
    for p in photos:
        data = read_file(str(p))[0]  # read and hash, as the pipeline's read stage does
        decoded.append(classifier.decode(data).pixels)
    DECODE_S.append((time.perf_counter() - start) / len(photos))
    pixels = np.stack(decoded)
    batches = [classifier.pad(pixels[start:start + batch_size])
               for start in range(0, len(pixels), batch_size)]
    start = time.perf_counter()
    for batch in batches:
        classifier.forward(batch)
    return len(photos) / (time.perf_counter() - start)


def pipeline_ceiling(bare: float, decode_s: float, cores: int, on_gpu: bool) -> float:
    """The best pipeline/bare ratio that reading, hashing and decoding every photo
    (`decode_s` CPU seconds each) leave: on the CPU they share the cores with the
    model's own work; on a GPU the cores only decode, at `cores / decode_s` img/s."""
    if on_gpu:
        return min(1.0, cores / decode_s / bare)
    return (1 / bare) / (1 / bare + decode_s / cores)


def labels_peak(db: str, *args: str, ok=(0,)) -> tuple[float, int, bytes]:
    """Seconds, peak RSS (KiB) and stdout of one `labels --db DB ARGS...` subprocess; a
    status outside `ok` is a RuntimeError (`labels status` exits 3 when no service runs).
    The peak is VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent
    (a benchmark grown large) across exec; VmHWM belongs to the new image."""
    code = ("import sys; from labels_cli.app import main\n"
            "try:\n    main()\nfinally:\n"
            "    print([line.split()[1] for line in open('/proc/self/status')\n"
            "           if line.startswith('VmHWM:')][0], file=sys.stderr)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "--db", db, *args], capture_output=True)
    took = time.perf_counter() - start
    if proc.returncode not in ok:
        raise RuntimeError(f"labels {' '.join(args)} failed: {proc.stderr[-2000:]!r}")
    return took, int(proc.stderr.decode().strip().splitlines()[-1]), proc.stdout


def forward_one_s(classifier, repeats: int = 5) -> float:
    """Median seconds of one forward pass over one image (batch 1)."""
    x = np.zeros((classifier.padded_size(1), *classifier.spec.input_shape), np.float32)
    classifier.forward(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.forward(x)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


