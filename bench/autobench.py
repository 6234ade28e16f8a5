"""`precision = auto` for bench/throughput.py --only-precisions: what it chose on this CPU and
why, the measurement it chose by beside the bench's own rows, and what the choice costs.

- The fidelity check's cost: the measurement `auto` keeps beside the converted model is
  removed and made again (labelsd.model.automeasure: a child process, the converted files
  kept, so this is the check alone; the conversion is timed by throughput.py), then read
  back (what every later start pays).
- Beside it, the rule before this one (bf16 where TensorFlow measured it >= 1.15x its own
  fp32, else fp32): `auto` must never be slower than that where the CPU has no AMX.
- The service with defaults (`--precision auto`): ready and at rest, in the precision rows
  of precisionbench, where it runs as the row `auto`.
"""

from __future__ import annotations

import time
from pathlib import Path

GOAL_CHECK_S = 10.0  # the fidelity check at the first start
GOAL_READY_AMX_S = 1.0
GOAL_REST_AMX_MIB = 300
GOAL_REST_MIB = 400  # without AMX
OLD_MIN_BF16_GAIN = 1.15  # the rule before this one


def measure(weights: Path, batch_size: int, model: str = "inception_v3"):
    """Measure `auto` afresh for these weights and print it; the Choice."""
    from labelsd.model import automeasure
    from labelsd.model import precision as prec
    from labelsd.model.registry import get_model

    spec = get_model(model)
    checked = spec.check_weights(weights)
    flags = prec.cpu_flags()
    path, checksum, _ = spec.identify(weights, checked)
    automeasure.record_path(Path(path), checksum, spec.key).unlink(missing_ok=True)
    start = time.perf_counter()
    m = automeasure.measured(spec, weights, checked, batch_size, flags)
    child_s = time.perf_counter() - start
    start = time.perf_counter()
    automeasure.measured(spec, weights, checked, batch_size, flags)
    hit_ms = 1000 * (time.perf_counter() - start)
    print(f"auto on {prec.cpu_model()} (candidates {', '.join(prec.candidates(flags))}; "
          f"{spec.family}, batch {batch_size}):", flush=True)
    if m is None:
        print("  the measurement failed: auto runs fp32 (see the log)")
        return prec.Choice("fp32", "not measured")
    choice = prec.choose_cpu_precision("auto", flags, lambda: m)
    print(f"  fidelity check: {m.seconds:.1f} s in the child (goal <= {GOAL_CHECK_S:.0f} s: "
          f"{'met' if m.seconds <= GOAL_CHECK_S else 'MISSED'}), {child_s:.1f} s with the child's start; "
          f"a later start reads it back in {hit_ms:.1f} ms")
    for p, got in sorted(m.precisions.items(), key=lambda item: -item[1].forward_ips):
        faithful = "faithful" if m.faithful(p) else "not faithful"
        print(f"  {p:5} {got.runtime:10} forward {got.forward_ips:7.2f} img/s "
              f"{got.forward_ips / m.precisions['fp32'].forward_ips:4.2f}x fp32  top-1 {got.top1}/{m.photos} "
              f"({got.top1_exact} exact)  top-3 >= {got.top3}/3  "
              f"{faithful if m.judged else 'fidelity not judged'}")
    print(f"  auto chose {choice.precision}: {choice.reason}", flush=True)
    return choice


def against_the_rule_before(speeds: dict[str, float], chosen: str, flags: frozenset[str]) -> None:
    """`speeds`: the bench's forward rows (tf-fp32, fp32, bf16, int8)."""
    old = "bf16" if "bf16" in speeds and speeds["bf16"] >= OLD_MIN_BF16_GAIN * speeds["tf-fp32"] else "fp32"
    if chosen not in speeds or old not in speeds:
        print(f"  (the rule before this one would run {old}; run the bench with --precisions "
              f"{','.join(sorted({old, chosen}))} to compare them)")
        return
    ratio = speeds[chosen] / speeds[old]
    goal = "no goal: this CPU has AMX" if "amx_bf16" in flags else (
        f"goal >= 1.00: {'met' if ratio >= 0.97 else 'MISSED'} (within 3% is the rounds' noise)")
    print(f"  the rule before this one runs {old} here: auto's {chosen} forward is {ratio:.2f}x of it ({goal})")


def service_goals(flags: frozenset[str], ready_s: float, rest_mib: float) -> str:
    if "amx_bf16" in flags:
        return (f"AMX goals: ready <= {GOAL_READY_AMX_S} s {'met' if ready_s <= GOAL_READY_AMX_S else 'MISSED'}, "
                f"at rest <= {GOAL_REST_AMX_MIB} MiB {'met' if rest_mib <= GOAL_REST_AMX_MIB else 'MISSED'}")
    return (f"no AMX: at rest goal <= {GOAL_REST_MIB} MiB {'met' if rest_mib <= GOAL_REST_MIB else 'MISSED'} "
            f"(the AMX goals, ready <= {GOAL_READY_AMX_S} s and <= {GOAL_REST_AMX_MIB} MiB, for comparison)")
