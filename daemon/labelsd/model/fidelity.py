"""The measurement `precision = auto` decides by: each precision this CPU runs, its labels
against fp32's on real photos and its forward's speed, for the weights in use.

Runs in a child process (`python -m labelsd.model.fidelity`, started by
labelsd.model.automeasure), right after that child converted the model for LiteRT
(labelsd.model.convert: fp32, then int8 from the same float file), so it never
costs the service TensorFlow's memory. The photos are the fidelity set shipped in
labelsd/data/fidelity (real photos, free to redistribute; SOURCES.md beside them says
where each comes from and its licence; scripts/make_fidelity_photos.py makes them),
decoded as the service decodes a photo, at the model's input size.

The reference is fp32 on LiteRT (the converted file, which matches TensorFlow's fp32 to
1e-5: tests/test_litert.py), or TensorFlow's fp32 where LiteRT is not installed. Each
precision's speed is its forward at the service's batch size, in the runtime the
service would run it on, warmed up: its best full batch of the labelling pass itself,
the precisions interleaved batch by batch (a neighbour's burst then penalises no one
precision). The probabilities are compared, never any other
output a model may have.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from labelsd.model.precision import TIE, Measured, Measurement

log = logging.getLogger(__name__)

PHOTOS_FOLDER = Path(__file__).resolve().parent.parent / "data" / "fidelity"
# Each precision's speed: its best full batch of the pass that gives its labels, the
# first batch left out (it warms the runtime up), the precisions interleaved batch by
# batch and each going first every other batch (a neighbour's burst then penalises no
# one precision); at least TIMED full batches each (more forwards of the first batch
# where the set gives fewer). Timing the labelling pass, rather than rounds after it,
# took the check from 9.3 to 6.5-8.4 s on 2 quiet EPYC cores (InceptionV3: fp32 and int8 on
# LiteRT, bf16 on TensorFlow); the goal is 10 s.
TIMED = 2


def photo_paths() -> list[Path]:
    return sorted(PHOTOS_FOLDER.glob("*.jpg"))


def photos_digest() -> str:
    """A digest of the fidelity set: a measurement on other photos is measured again."""
    import hashlib

    digest = hashlib.sha256()
    for path in photo_paths():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def agreement(reference: np.ndarray, probs: np.ndarray) -> tuple[int, int, int]:
    """(photos whose top-1 the precision keeps: the reference's, or a class the reference
    scores within precision.TIE of its top-1; the smallest top-3 overlap over the photos;
    photos whose top-1 is the reference's own)."""
    ref3, our3 = np.argsort(-reference, 1)[:, :3], np.argsort(-probs, 1)[:, :3]
    rows = np.arange(len(reference))
    kept = reference[rows, our3[:, 0]] >= reference[rows, ref3[:, 0]] - TIE
    return (int(kept.sum()), min(len(set(a) & set(b)) for a, b in zip(ref3, our3)),
            int((ref3[:, 0] == our3[:, 0]).sum()))


def one_class(reference: np.ndarray) -> int:
    """How many photos share the most common top-1 class (random weights: all of them)."""
    return Counter(reference.argmax(1).tolist()).most_common(1)[0][1]


def probabilities(out) -> np.ndarray:
    """A forward's probabilities, whatever else a model's forward returns beside them."""
    if isinstance(out, dict):
        out = out["probabilities"]
    elif isinstance(out, (tuple, list)):
        out = out[0]
    return np.asarray(out, dtype=np.float32)


def measure(runners: dict, pixels: np.ndarray, batch_size: int, runtimes: dict[str, str]) -> Measurement:
    """`runners`: {precision: forward(batch) -> output}, "fp32" (the reference) among them."""
    start = time.perf_counter()
    batches = [pixels[i:i + batch_size] for i in range(0, len(pixels), batch_size)]
    outputs: dict[str, list] = {p: [] for p in runners}
    seconds: dict[str, list] = {p: [] for p in runners}  # a photo, per timed batch

    def run_all(batch: np.ndarray, turn: int, keep: bool, timed: bool) -> None:
        order = list(runners.items())
        for p, run in order if turn % 2 else order[::-1]:
            t0 = time.perf_counter()
            out = run(batch)
            took = time.perf_counter() - t0
            if keep:
                outputs[p].append(probabilities(out))
            if timed:
                seconds[p].append(took / len(batch))

    for turn, batch in enumerate(batches):
        run_all(batch, turn, keep=True, timed=turn > 0 and len(batch) == batch_size)
    turn = len(batches)
    while min(len(s) for s in seconds.values()) < TIMED:  # a set of fewer full batches
        run_all(batches[0], turn, keep=False, timed=True)
        turn += 1
    reference = np.concatenate(outputs["fp32"])
    measured = {}
    for p in runners:
        measured[p] = Measured(runtimes[p], 1 / min(seconds[p]), *agreement(reference, np.concatenate(outputs[p])))
    return Measurement(len(pixels), one_class(reference), measured, time.perf_counter() - start)


def measure_in_this_process(model: str, weights, tflites: dict[str, Path], bf16: bool,
                            batch_size: int) -> Measurement:
    """Each precision of `tflites` on LiteRT ({"fp32": file, "int8": file}, empty where
    LiteRT is not installed) and bf16 on TensorFlow where asked, on the fidelity set."""
    from labelsd.model.registry import get_model

    spec = get_model(model)
    started = time.perf_counter()
    pixels = np.stack([spec.decode(path.read_bytes()).pixels for path in photo_paths()])
    runners, runtimes = {}, {}
    for precision, path in tflites.items():
        from labelsd.model.litert import LiteRTRuntime

        runners[precision] = LiteRTRuntime(path, precision="float32" if precision == "fp32" else precision).forward
        runtimes[precision] = "litert"
    wanted = (["fp32"] if "fp32" not in runners else []) + (["bf16"] if bf16 else [])
    for precision in wanted:
        from labelsd.model.keras_runtime import load_keras_runtime

        runtime, _ = load_keras_runtime(spec, weights, "cpu", mixed_precision=precision == "bf16", jit_compile=None)
        runners[precision], runtimes[precision] = runtime.forward, "tensorflow"
    got = measure(runners, pixels, batch_size, runtimes)
    # what it cost beyond conversion: decoding the photos, loading each runtime, the rounds
    return Measurement(got.photos, got.one_class, got.precisions, time.perf_counter() - started)


# --------------------------------------------------------------------------- the child


def _pairs(values: list[str]) -> dict[str, Path]:
    pairs = dict(value.split("=", 1) for value in values)
    return {precision: Path(path) for precision, path in pairs.items()}


def main(argv: list[str] | None = None) -> int:
    """Convert what is asked (--make fp32=FILE int8=FILE), measure, write --out (JSON)."""
    p = argparse.ArgumentParser(prog="python -m labelsd.model.fidelity", description=main.__doc__)
    p.add_argument("--weights", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--use", action="append", default=[], help="PRECISION=FILE: a converted file to measure")
    p.add_argument("--make", action="append", default=[], help="PRECISION=FILE: convert into FILE, then measure")
    p.add_argument("--bf16", action="store_true", help="measure bf16 on TensorFlow too")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    made = _pairs(args.make)
    try:
        from labelsd.model import converter

        start = time.perf_counter()
        converter.convert_for_litert(Path(args.weights), args.model, made, _pairs(args.use))
        convert_s = time.perf_counter() - start
        measurement = measure_in_this_process(args.model, args.weights, {**_pairs(args.use), **made},
                                              args.bf16, args.batch_size)
    except Exception as err:  # noqa: BLE001 (the parent reads the last line and runs fp32)
        for path in made.values():
            path.unlink(missing_ok=True)
        text = str(err).strip()
        print(f"{type(err).__name__}: {text.splitlines()[0] if text else ''}", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps({"measurement": measurement.to_json(), "convert_s": round(convert_s, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
