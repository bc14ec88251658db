"""Whole-model cost of bit-exact approximate-multiplier emulation, as ratios measured in one run.

MobileNetV2-for-CIFAR, batch 64, every Conv2d/Linear on one 8x8 table through
the fast path (``auto``), over the exact float32 model in its fastest memory
layout, same process, interleaved repeats, medians. Also: per layer type, the
reference path's agreement bit for bit, and peak memory (ru_maxrss).

    python benchmarks/emulation_speed.py --quick            # a few minutes on 2 CPU cores
    python benchmarks/emulation_speed.py --tables mul8s_1KV9 mul8s_1L2N mitchell_w6_s8

The last line is ``ratio_vs_exact=<float> bit_exact=<true|false>`` for the first table.
Emulation time is the cost of simulating the multiplier in PyTorch on this
machine; it says nothing about the latency of hardware built with it.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time
from collections import defaultdict

import torch
from torch import nn

from dse.assignment import LayerConfig, targetable_layers
from dse.cost.macs import layer_shapes
from dse.emulation import calibrate_ranges
from dse.training.models import get_model
from dse.transform import apply_assignment


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one table, fewer repeats")
    parser.add_argument(
        "--tables", nargs="+", default=["mul8s_1L2J", "mul8s_1KV9", "mul8s_1KX5", "truncated_t6_s8", "mitchell_w6_s8"]
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tables = args.tables[:1] if args.quick else args.tables
    repeats = 3 if args.quick else args.repeats
    torch.manual_seed(0)
    base = get_model("mobilenet_v2_cifar").eval()  # every variant below is a copy of these weights
    x = torch.randn(args.batch, 3, 32, 32)
    layers = list(targetable_layers(base))
    ranges = calibrate_ranges(base, [x[:32]], layers)
    model = copy.deepcopy(base)

    layouts = {
        "nchw": (model, x),
        "channels_last": (model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)),
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{len(layers)} conv/linear layers"
    )
    report = []
    for table in tables:
        assignment = {n: LayerConfig(multiplier=table) for n in layers}
        fast = apply_assignment(base, assignment, ranges, path="auto")
        with torch.inference_mode():
            fast_out = fast(x)  # warm-up + builds weight caches
            exact_layout = {k: m(inp) for k, (m, inp) in layouts.items()}  # warm-up
            samples: dict[str, list[float]] = defaultdict(list)
            for _ in range(repeats):  # interleaved, so drift hits every variant alike
                for k, (m, inp) in layouts.items():
                    samples[k] += timed(lambda m=m, inp=inp: m(inp), 1)
                samples["approx"] += timed(lambda fast=fast: fast(x), 1)
        exact_s = min(statistics.median(samples[k]) for k in layouts)
        approx_s = statistics.median(samples["approx"])
        small = x[:4]
        reference = apply_assignment(base, assignment, ranges, path="reference")
        with torch.inference_mode():
            bit_exact = torch.equal(reference(small), fast(small))
        kinds_exact = per_kind_times(model.to(memory_format=torch.contiguous_format), x, repeats)
        kinds_fast = per_kind_times(fast, x, repeats)
        paths = sorted({getattr(m, "path", "-") for m in targetable_layers(fast).values()})
        print(
            f"\n{table} (path {', '.join(paths)}): exact fp32 {exact_s * 1e3:.1f} ms "
            f"(nchw {statistics.median(samples['nchw']) * 1e3:.1f}, "
            f"channels_last {statistics.median(samples['channels_last']) * 1e3:.1f}), "
            f"emulated {approx_s * 1e3:.1f} ms, ratio {approx_s / exact_s:.2f}x, bit-exact vs reference: {bit_exact}"
        )
        for kind in ("first_conv", "pointwise", "depthwise", "conv", "linear"):
            if kind in kinds_fast:
                print(
                    f"  {kind:>10}: {kinds_fast[kind] * 1e3:8.1f} ms vs {kinds_exact[kind] * 1e3:6.1f} ms exact "
                    f"({kinds_fast[kind] / kinds_exact[kind]:.1f}x)"
                )
        report.append((table, approx_s / exact_s, bit_exact, float((fast_out - exact_layout["nchw"]).abs().max())))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak resident memory of this process: {peak_gb:.2f} GB (ru_maxrss)")
    table, ratio, exact, _ = report[0]
    print(f"ratio_vs_exact={ratio:.3f} bit_exact={'true' if exact else 'false'}")


if __name__ == "__main__":
    main()
