"""Cost of bit-exact multiplier emulation in a recurrent network, as ratios measured in one run.

The shipped GRU (``gru_japanese_vowels``) on a batch of 64 JapaneseVowels test sequences (variable length,
packed), PyTorch's own ``nn.GRU`` forward against the unrolled GRU (dse/emulation/recurrent.py) with every
weight matrix and the classifier on one multiplier: exact_s8, a rank-1 error table (mul8s_1KVM), a
high-rank unsigned table (mul8u_NLX) and Mitch-w6, plus the unrolled float32 GRU (the time loop's own
cost). Same process, interleaved repeats, medians. ``bit_exact``: each emulated network's logits equal
those of the reference path (one table lookup per product) bit for bit.

    python benchmarks/recurrent_speed.py [--repeats 30] [--threads 1]
    python benchmarks/recurrent_speed.py --also truncated_t6_s8 drum_k4_s8 mul8s_1L2N   # more families

Last line: ``worst_ratio_vs_exact=<max ratio over the multipliers> bit_exact=<true|false>`` (over every
multiplier measured, ``--also`` included).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from dse.assignment import LayerConfig, targetable_layers
from dse.candidates.transform import apply_assignment
from dse.emulation import calibrate_ranges, unroll_recurrent
from dse.emulation.recurrent import bounded_state_ranges
from dse.training.models.recurrent_classifier import gru_classifier
from dse.training.time_series import TimeSeriesDataModule
from dse.training.weights import load_weights

MULTIPLIERS = {
    "exact_s8": "exact 8-bit (signed)",
    "mul8s_1KVM": "EvoApprox, rank-1 error",
    "mul8u_NLX": "EvoApprox unsigned, high-rank error",
    "mitchell_w6_s8": "Mitch-w6 (paper 2)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--also", nargs="*", default=[], help="more multipliers (dse.multipliers names)")
    args = parser.parse_args()
    chosen = {**MULTIPLIERS, **{name: "" for name in args.also}}
    torch.set_num_threads(args.threads)

    data = TimeSeriesDataModule(test_split="all", eval_batch_size=args.batch)
    data.setup("test")
    x = next(iter(data.test_dataloader()))[0]
    calibration = data.calibration_images(256, 0)
    assert calibration is not None
    exact = load_weights(gru_classifier(), "gru_japanese_vowels").eval()
    unrolled = copy.deepcopy(exact)
    unroll_recurrent(unrolled)
    layers = list(targetable_layers(unrolled))
    ranges = calibrate_ranges(unrolled, [calibration], layers) | bounded_state_ranges(unrolled)

    variants: dict[str, nn.Module] = {"nn.GRU (exact)": exact, "unrolled float32": unrolled}
    bit_exact = True
    for name in chosen:
        assignment = {layer: LayerConfig(multiplier=name) for layer in layers}
        fast = apply_assignment(unrolled, assignment, ranges).eval()
        reference = apply_assignment(unrolled, assignment, ranges, path="reference").eval()
        with torch.no_grad():
            bit_exact &= bool(torch.equal(fast(x), reference(x)))
        variants[name] = fast
    samples = interleaved(variants, x, args.repeats)
    exact_s = statistics.median(samples["nn.GRU (exact)"])
    print(f"batch {len(x)} sequences ({x.shape[1]} steps at most), {args.threads} thread(s), {args.repeats} repeats")
    print(f"{'variant':<18} {'what':<38} {'ms':>8} {'x nn.GRU':>9}")
    worst = 0.0
    for name, times in samples.items():
        ratio = statistics.median(times) / exact_s
        if name in chosen:
            worst = max(worst, ratio)
        what = chosen.get(name, "")
        print(f"{name:<18} {what:<38} {1e3 * statistics.median(times):8.3f} {ratio:9.2f}")
    print(f"worst_ratio_vs_exact={worst:.2f} bit_exact={str(bit_exact).lower()}")


def interleaved(variants: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, list[float]]:
    """Seconds of one forward of each variant, ``repeats`` times, interleaved so drift hits all alike."""
    forwards: dict[str, Callable[[], object]] = {name: partial(m, x) for name, m in variants.items()}
    samples: dict[str, list[float]] = {name: [] for name in forwards}
    with torch.no_grad():  # (not inference_mode: emulated layers keep caches keyed on tensor versions)
        for forward in forwards.values():
            forward()  # warm-up: weight caches, the kernel, the allocator
        for _ in range(repeats):
            for name, forward in forwards.items():
                start = time.perf_counter()
                forward()
                samples[name].append(time.perf_counter() - start)
    return samples


if __name__ == "__main__":
    main()
