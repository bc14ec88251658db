"""Whole-model cost of bit-exact approximate-multiplier emulation, as ratios measured in one run.

MobileNetV2-for-CIFAR, batch 64, every Conv2d/Linear on one 8x8 table through the
fast path (``auto``), over the exact float32 model in its fastest memory layout, same
process, interleaved repeats, medians (``--out`` adds the min-max of the per-repeat
ratios). Per table: the path each layer kind took, the whole-model ratio, the pointwise
and depthwise ratios, agreement with the reference path bit for bit (4 images), and the
process's peak memory so far (ru_maxrss). Then the anchors, on the same model and batch:
one table lookup per product without a compiled kernel, the scheme of the lookup-table
emulators, as dse's ``table`` and ``reference`` paths (``--lookup-batch`` to time them on fewer images).

    python benchmarks/emulation_speed.py                    # every shipped table + Mitchell, truncated, DRUM
    python benchmarks/emulation_speed.py --quick            # mitchell_w6_s8 and a high-rank unsigned EvoApprox circuit
    python benchmarks/emulation_speed.py --tables mul8s_1KV9 path/to/luts.npz:mine
    python benchmarks/emulation_speed.py --out emulation_speed.csv   # the table as CSV too
                                          # (and the lookup anchors as emulation_speed_lookup.csv)

The last line is ``worst_ratio_vs_exact=<max ratio> bit_exact=<true|false>`` over the
tables measured. Emulation time is the cost of simulating the multiplier on the machine
running this; it says nothing about the latency of hardware built with it.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from dse.assignment import LayerConfig, targetable_layers
from dse.candidates.transform import apply_assignment
from dse.cost.macs import layer_shapes
from dse.emulation import EmulationPath, calibrate_ranges
from dse.multipliers import list_multipliers
from dse.training.models import get_model


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def per_kind_times(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds spent in the Conv2d/Linear layers of each kind, over ``repeats`` forwards."""
    kinds = {n: s.kind for n, s in layer_shapes(model).items()}
    kinds[next(iter(kinds))] = "first_conv"
    spent: dict[str, list[float]] = defaultdict(list)
    starts: dict[str, float] = {}
    handles = []
    for name, module in targetable_layers(model).items():
        handles.append(
            module.register_forward_pre_hook(lambda m, i, n=name: starts.__setitem__(n, time.perf_counter()))
        )
        handles.append(
            module.register_forward_hook(lambda m, i, o, n=name: spent[n].append(time.perf_counter() - starts[n]))
        )
    with torch.inference_mode():
        for _ in range(repeats):
            model(x)
    for h in handles:
        h.remove()
    totals: dict[str, float] = defaultdict(float)
    for name, samples in spent.items():
        totals[kinds[name]] += statistics.median(samples)
    return dict(totals)


Layouts = dict[str, tuple[nn.Module, torch.Tensor]]  # the exact model and its input, per memory layout


def versus_exact(
    layouts: Layouts, emulated: dict[str, Callable[[], object]], repeats: int
) -> tuple[float, dict[str, dict[str, float]]]:
    """Each emulated forward timed beside the exact model in every layout, interleaved over ``repeats``.

    Returns the exact model's seconds (the median of its fastest layout) and, per emulated variant, its
    median seconds, the ratio of the medians, and the min-max of the per-repeat ratios (each repeat
    against that repeat's faster exact layout).
    """
    variants = {k: partial(m, inp) for k, (m, inp) in layouts.items()} | emulated
    samples: dict[str, list[float]] = defaultdict(list)
    with torch.inference_mode():
        for forward in variants.values():
            forward()  # warm-up: weight caches (and the kernel, once), the allocator at this batch size
        for _ in range(repeats):  # interleaved, so drift hits every variant alike
            for name, forward in variants.items():
                samples[name] += timed(forward, 1)
    exact_s = min(statistics.median(samples[k]) for k in layouts)
    exact_per_repeat = [min(samples[k][i] for k in layouts) for i in range(repeats)]
    stats = {}
    for name in emulated:
        per_repeat = [a / e for a, e in zip(samples[name], exact_per_repeat, strict=True)]
        seconds = statistics.median(samples[name])
        stats[name] = {
            "seconds": seconds,
            "ratio": seconds / exact_s,
            "ratio_min": min(per_repeat),
            "ratio_max": max(per_repeat),
        }
    return exact_s, stats


LOOKUP_PATHS: dict[EmulationPath, str] = {  # the anchors: one table lookup per product, no compiled kernel
    "table": "weight-specific tables + embedding_bag",
    "reference": "unfold + one gather per product",
}


def lookup_anchors(
    base: nn.Module, table: str, ranges: dict, layouts: Layouts, repeats: int
) -> list[dict[str, object]]:
    """Each of ``LOOKUP_PATHS`` against the exact model in its fastest layout, on the inputs of ``layouts``."""
    assignment = {n: LayerConfig(multiplier=table) for n in targetable_layers(base)}
    x = layouts["nchw"][1]
    lookups = {p: apply_assignment(base, assignment, ranges, path=p) for p in LOOKUP_PATHS}
    exact_s, timing = versus_exact(layouts, {p: partial(m, x) for p, m in lookups.items()}, repeats)
    return [
        {
            "table": table,
            "path": path,
            "how": how,
            "model_ratio": timing[path]["ratio"],
            "model_ratio_min": timing[path]["ratio_min"],
            "model_ratio_max": timing[path]["ratio_max"],
            "lookup_ms": timing[path]["seconds"] * 1e3,
            "exact_ms": exact_s * 1e3,
            "batch": len(x),
            "repeats": repeats,
            "threads": torch.get_num_threads(),
        }
        for path, how in LOOKUP_PATHS.items()
    ]


QUICK = ["mitchell_w6_s8", "mul8u_NLX"]  # paper 2's Mitch-w6; the highest-rank unsigned EvoApprox error (52)
FAMILIES = ["mitchell_w4_s8", "mitchell_w6_s8", "mitchell_w8_s8", "truncated_t6_s8", "drum_k4_s8"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, fewer repeats")
    parser.add_argument("--tables", nargs="+", help="multiplier names (default: every shipped table + families)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--details", action="store_true", help="per layer kind times, in ms")
    parser.add_argument("--out", help="also write the table to this CSV (one row per table)")
    parser.add_argument(
        "--lookup-batch",
        type=int,
        default=None,
        help="images for the one-lookup-per-product anchors (default: --batch, comparable with the table; "
        "8 with --quick; 0: skip them)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shipped = sorted(n for n in list_multipliers() if n.startswith("mul8"))
    tables = args.tables or (QUICK if args.quick else [*shipped, *FAMILIES])
    repeats = 3 if args.quick else args.repeats
    torch.manual_seed(0)
    base = get_model("mobilenet_v2_cifar").eval()  # every variant below is a copy of these weights
    x = torch.randn(args.batch, 3, 32, 32)
    layers = list(targetable_layers(base))
    kinds = {n: s.kind for n, s in layer_shapes(base).items()}
    kinds[next(iter(kinds))] = "first_conv"
    ranges = calibrate_ranges(base, [x[:32]], layers)
    model = copy.deepcopy(base)
    layouts: Layouts = {
        "nchw": (model, x),
        "channels_last": (
            copy.deepcopy(model).to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        ),
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{len(layers)} conv/linear layers, {repeats} interleaved repeats"
    )
    print(
        f"{'table':>16} {'paths (pointwise/depthwise/other)':>36} {'model':>7} {'pointw.':>8} {'depthw.':>8} "
        f"{'bit-exact':>9} {'peak GB':>8}"
    )
    report = []
    rows: list[dict[str, object]] = []
    for table in tables:
        assignment = {n: LayerConfig(multiplier=table) for n in layers}
        fast = apply_assignment(base, assignment, ranges, path="auto")
        exact_s, timing = versus_exact(layouts, {"approx": partial(fast, x)}, repeats)
        approx = timing["approx"]
        reference = apply_assignment(base, assignment, ranges, path="reference")
        with torch.inference_mode():
            bit_exact = torch.equal(reference(x[:4]), fast(x[:4]))
        # per layer kind, beside the exact model measured at the same moment: measured once at the start of the
        # run, the exact model's kinds came out several times slower than later, and every kind's ratio near 1x
        kinds_exact = per_kind_times(model, x, repeats)
        kinds_fast = per_kind_times(fast, x, repeats)
        by_kind: dict[str, set[str]] = defaultdict(set)
        for name, module in targetable_layers(fast).items():
            group = kinds[name] if kinds[name] in ("pointwise", "depthwise") else "other"
            by_kind[group].add(getattr(module, "path", "-"))
        paths = "/".join(",".join(sorted(by_kind[k])) for k in ("pointwise", "depthwise", "other"))
        ratio = approx["ratio"]
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        pw, dw = (kinds_fast[k] / kinds_exact[k] for k in ("pointwise", "depthwise"))
        print(f"{table:>16} {paths:>36} {ratio:>6.2f}x {pw:>7.1f}x {dw:>7.1f}x {bit_exact!s:>9} {peak_gb:>8.2f}")
        if args.details:
            for kind in sorted(kinds_fast):
                print(f"{'':>18}{kind}: {kinds_fast[kind] * 1e3:.1f} ms vs {kinds_exact[kind] * 1e3:.1f} ms exact")
        report.append((table, ratio, bit_exact))
        rows.append(
            {
                "table": table,
                "paths": paths,
                "model_ratio": ratio,
                "model_ratio_min": approx["ratio_min"],
                "model_ratio_max": approx["ratio_max"],
                "pointwise_ratio": pw,
                "depthwise_ratio": dw,
                "bit_exact": bit_exact,
                "peak_gb": peak_gb,
                "approx_ms": approx["seconds"] * 1e3,
                "exact_ms": exact_s * 1e3,
                "batch": args.batch,
                "repeats": repeats,
                "threads": torch.get_num_threads(),
            }
        )
        if args.out:  # after each table: an interruption keeps what was measured
            pd.DataFrame(rows).to_csv(args.out, index=False)
    worst = max(report, key=lambda r: r[1])
    print(f"\nexact fp32 model: {exact_s * 1e3:.1f} ms per batch (last table's run); worst: {worst[0]}")
    default_lookup_batch = 8 if args.quick else args.batch  # --quick keeps them short: seconds per image
    lookup_batch = default_lookup_batch if args.lookup_batch is None else args.lookup_batch
    if lookup_batch > 0:
        fewer = {k: (m, inp[:lookup_batch]) for k, (m, inp) in layouts.items()}
        anchors = lookup_anchors(base, tables[0], ranges, fewer, min(repeats, 3))
        for a in anchors:
            print(
                f"anchor, one lookup per product ({a['path']} path: {a['how']}; {a['table']}, batch {a['batch']}): "
                f"{a['model_ratio']:.1f}x the exact model ({a['model_ratio_min']:.1f}-{a['model_ratio_max']:.1f}x "
                f"over {a['repeats']} repeats)"
            )
        if args.out:
            out = Path(args.out)
            pd.DataFrame(anchors).to_csv(out.with_name(f"{out.stem}_lookup.csv"), index=False)
    all_exact = all(r[2] for r in report)
    print(f"worst_ratio_vs_exact={worst[1]:.3f} bit_exact={'true' if all_exact else 'false'}")


if __name__ == "__main__":
    main()
