"""The precision the model runs at on a CPU: what the CPU can do, and the `auto` rule.

`fp32` is always there (LiteRT, or TensorFlow where LiteRT is not installed); `int8`
is LiteRT's dynamic-range model (labelsd.model.quantize); `bf16` runs Keras's
convolutions (but the first) in bfloat16 on TensorFlow (keras_runtime.BF16_RECIPE),
which oneDNN turns into AMX or AVX512-BF16 instructions, so it is a candidate only on
a CPU that has one of them (elsewhere it is emulated, and slow).

`auto` on a CPU runs the fastest precision whose labels agree with fp32's for the
weights in use, as measured on the fidelity set of real photos
(labelsd.model.fidelity: top-1 equal on every photo, where a class fp32 itself scores
within TIE of its top-1 counts as equal; top-3 sharing at least 2 of 3 on every
photo), once per weights, model, recipe, runtime version and CPU
(labelsd.model.automeasure caches it beside the converted model). Tie-breaks: a
precision that holds more memory than a faithful lighter one must be faster by its
MIN_GAIN to be chosen (TensorFlow's bf16 holds ~1 GiB at rest and takes ~5 s to
ready, LiteRT's fp32 ~330 MiB and int8 ~240 MiB, both under a second). Weights under
which (nearly) every photo lands in one class (random weights) leave fidelity unjudged:
then the fastest, with a WARNING. On a GPU, `auto` keeps what the GPU path does (mixed
float16 from compute capability 7).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from labelsd.config import PRECISIONS
from labelsd.errors import ConfigError

log = logging.getLogger(__name__)

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# The lightest at rest first: LiteRT int8 (236 MiB), LiteRT fp32 (331), TensorFlow bf16 (967).
BY_MEMORY = ("int8", "fp32", "bf16")
# How much faster than the faithful precision chosen so far (a lighter one) a heavier one
# must be: fp32 against int8 only beyond the measurement's noise; bf16 (TensorFlow in the
# process: +700 MiB, +5 s to ready) by as much as the rule before this one asked of it.
MIN_GAIN = {"fp32": 1.05, "bf16": 1.15}
TOP3_MIN = 2  # of 3: the top-3 overlap a faithful precision keeps on every photo
# A tie fp32 itself cannot break: a precision whose top-1 is a class fp32 scores within this
# much of its own top-1 keeps that photo's top-1 (labels show scores in whole percent). Every
# top-1 that int8 or bf16 turned on EfficientNet-Lite0's real weights was one (fp32 leads of
# 0.0003-0.012 on the fidelity set; issue 21's photos: < 0.015).
TIE = 0.02
ONE_CLASS_SHARE = 0.9  # this share of the photos in one class: fidelity cannot be judged


def _cpuinfo_value(keys: tuple[str, ...], cpuinfo: str | os.PathLike) -> str | None:
    """The first CPU's value for the first of `keys` in cpuinfo; None where there is none."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value
    return None


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags (`flags` on x86; empty where there is no such line)."""
    return frozenset((_cpuinfo_value(("flags", "Features"), cpuinfo) or "").split())


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    value = _cpuinfo_value(("model name",), cpuinfo)
    return "unknown CPU" if value is None else value.strip()


def bf16_hardware(flags: frozenset[str]) -> str | None:
    """'amx_bf16' or 'avx512_bf16' (the best the CPU has for bf16), None without either."""
    return next((flag for flag in BF16_FLAGS if flag in flags), None)


def candidates(flags: frozenset[str]) -> tuple[str, ...]:
    """The precisions `auto` measures on this CPU, lightest first."""
    return tuple(p for p in BY_MEMORY if p != "bf16" or bf16_hardware(flags))


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


# --------------------------------------------------------------------------- measured


@dataclass(frozen=True)
class Measured:
    """One precision on the fidelity set, against fp32's labels."""

    runtime: str  # litert | tensorflow
    forward_ips: float  # images a second through the forward, at the service's batch size
    top1: int  # photos whose top-1 is fp32's, or a class fp32 scores within TIE of its top-1
    top3: int  # the smallest top-3 overlap with fp32's over the photos (0..3)
    top1_exact: int  # photos whose top-1 is fp32's own


@dataclass(frozen=True)
class Measurement:
    """What labelsd.model.fidelity measured for one weights file on this CPU."""

    photos: int
    one_class: int  # the most photos fp32 puts in one class
    precisions: dict[str, Measured]
    seconds: float = 0.0  # what measuring cost (conversion not counted)

    @property
    def judged(self) -> bool:
        """False where (nearly) every photo lands in one class: agreement then says nothing."""
        return self.one_class < ONE_CLASS_SHARE * self.photos

    def faithful(self, precision: str) -> bool:
        got = self.precisions[precision]
        return got.top1 == self.photos and got.top3 >= TOP3_MIN

    def to_json(self) -> dict:
        return {"photos": self.photos, "one_class": self.one_class, "seconds": round(self.seconds, 2),
                "precisions": {p: [m.runtime, round(m.forward_ips, 1), m.top1, m.top3, m.top1_exact]
                               for p, m in self.precisions.items()}}

    @classmethod
    def from_json(cls, data) -> Measurement:
        """The measurement `to_json` wrote; ValueError for anything else."""
        try:
            precisions = {str(p): Measured(str(r), float(ips), int(t1), int(t3), int(exact))
                          for p, (r, ips, t1, t3, exact) in data["precisions"].items()}
            got = cls(int(data["photos"]), int(data["one_class"]), precisions, float(data.get("seconds", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"not a measurement: {err}") from err
        if got.photos < 1 or "fp32" not in precisions or any(
                p not in BY_MEMORY or m.forward_ips <= 0 for p, m in precisions.items()):
            raise ValueError("not a measurement: no fp32, or an unknown precision or speed")
        return got


@dataclass(frozen=True)
class Choice:
    precision: str  # fp32 | bf16 | int8
    reason: str
    measurement: Measurement | None = field(default=None, compare=False)


def choose_cpu_precision(requested: str, flags: frozenset[str], measure) -> Choice:
    """The precision a CPU runs at. `measure()` -> Measurement (None where it could not
    measure) is called only for `auto`."""
    check_precision(requested)
    if requested != "auto":
        if requested == "bf16" and bf16_hardware(flags) is None:
            log.warning("--precision bf16 on a CPU with neither AMX nor AVX512-BF16: "
                        "bfloat16 is emulated there and slower than fp32")
        return Choice(requested, "asked for")
    measurement = measure()
    if measurement is None:
        return Choice("fp32", "auto: the precisions could not be measured, so fp32")
    choice = auto_choice(measurement)
    if not measurement.judged:
        log.warning("%s", choice.reason)
    return choice


def auto_choice(m: Measurement) -> Choice:
    """The rule (see the module's doc), on a measurement."""
    speed = {p: got.forward_ips for p, got in m.precisions.items()}
    eligible = [p for p in BY_MEMORY if p in speed and (not m.judged or p == "fp32" or m.faithful(p))]
    chosen = eligible[0]
    for heavier in eligible[1:]:
        if speed[heavier] >= MIN_GAIN[heavier] * speed[chosen]:
            chosen = heavier
    if m.judged:
        why = f"auto: {chosen}, the fastest precision whose labels match fp32's on all {m.photos} real photos"
    else:
        why = (f"auto: {chosen}, the fastest; fidelity cannot be judged: these weights put {m.one_class} of "
               f"{m.photos} photos in one class (random weights?)")
    faster = [p for p in eligible if speed[p] > speed[chosen]]
    if faster:
        p = max(faster, key=speed.get)
        why += (f" ({p} is {speed[p] / speed[chosen]:.2f}x as fast, short of the {MIN_GAIN[p]:.2f}x asked "
                f"of it for its memory)")
    return Choice(chosen, f"{why}; {figures(m)}", m)


def figures(m: Measurement) -> str:
    """'forward int8 119.3 img/s on litert (top-1 25/25, top-3 >= 3/3), ...', fastest first."""
    rows = []
    for p, got in sorted(m.precisions.items(), key=lambda item: -item[1].forward_ips):
        ties = got.top1 - got.top1_exact
        agree = f"top-1 {got.top1}/{m.photos}" + (f" ({ties} on fp32's ties)" if ties else "")
        agree += f", top-3 >= {got.top3}/3"
        if m.judged and p != "fp32" and not m.faithful(p):
            agree += ": not faithful"
        rows.append(f"{p} {got.forward_ips:.1f} img/s on {got.runtime} ({agree})")
    return "forward " + ", ".join(rows) + (f"; measured in {m.seconds:.1f} s" if m.seconds else "")


def summary(choice: Choice) -> dict | None:
    """`auto`'s choice for `labels model info --json` and `labels status --json`, or None
    where `auto` measured nothing (a precision asked for, a GPU, nothing measured)."""
    m = choice.measurement
    if m is None:
        return None
    return {"chosen": choice.precision, "why": choice.reason, "photos": m.photos, "judged": m.judged,
            "measure_s": round(m.seconds, 2),
            "measured": {p: {"runtime": got.runtime, "forward_ips": round(got.forward_ips, 1),
                             "top1": got.top1, "top1_exact": got.top1_exact, "top3_min": got.top3,
                             "faithful": m.faithful(p)}
                         for p, got in m.precisions.items()}}


# ---------------------------------------------------- what a node registers (labels status)

NOTE_MARK = "; auto "
NOTE_LIMIT = 200  # the nodes table's device column (VARCHAR(200) on PostgreSQL)


def with_note(device: str, choice: Choice | None) -> str:
    """The device string a service registers, `auto`'s measurement after it where it
    chose by one (compact JSON), so that `labels status` can say why; the bare string
    where that would not fit the column."""
    if choice is None or choice.measurement is None:
        return device
    m = choice.measurement
    note = {"c": choice.precision, "n": m.photos, "o": m.one_class, "s": round(m.seconds, 1),
            **{p: [round(got.forward_ips, 1), got.top1, got.top3, got.top1_exact, got.runtime]
               for p, got in m.precisions.items()}}
    text = f"{device}{NOTE_MARK}{json.dumps(note, separators=(',', ':'))}"
    return text if len(text) <= NOTE_LIMIT else device


def read_note(registered: str | None) -> tuple[str, Choice | None]:
    """(the device string, `auto`'s choice) from what `with_note` wrote; (text, None)
    for a node that chose no other way, or an older labelsd."""
    text = registered or ""
    device, mark, note = text.partition(NOTE_MARK)
    if not mark:
        return text, None
    try:
        data = json.loads(note)
        m = Measurement.from_json({"photos": data["n"], "one_class": data["o"], "seconds": data.get("s", 0),
                                   "precisions": {p: [v[4], v[0], v[1], v[2], v[3]] for p, v in data.items()
                                                  if p in BY_MEMORY}})
        chosen = str(data["c"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):  # not what with_note wrote
        return device, None
    rule = auto_choice(m)
    return device, Choice(chosen, rule.reason if rule.precision == chosen else f"auto: {chosen}; {figures(m)}", m)
