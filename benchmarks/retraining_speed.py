"""Cost of one approximate retraining step, as ratios to the exact float32 step measured in the same run.

MobileNetV2-for-CIFAR, batch 128, one training step (forward, backward, SGD update; batch
norm in training mode) with every Conv2d/Linear on one multiplier: the forward is the
bit-exact emulation, the backward the exact layers' gradients at the quantized operands
(straight-through). ``<table>+error_model`` trains through the fitted error model instead
(dse.emulation.error_model; refitted every 50 steps in retraining, not counted here).
Interleaved repeats, medians; the exact step runs in its fastest layout, each emulated model in
the one retraining gives it (``dse.emulation.training_memory_format``).

    python benchmarks/retraining_speed.py
    python benchmarks/retraining_speed.py --tables mul8s_1KV9 mitchell_w6_s8+error_model --repeats 5

Also checks that the training-mode forward equals the evaluation-mode forward bit for bit.
The last line is ``train_step_ratio=<ratio for mul8s_1KV9> bit_exact_forward=<true|false>``.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from dse.assignment import LayerConfig, targetable_layers
from dse.candidates.transform import apply_assignment
from dse.emulation import calibrate_ranges, fit_error_models, training_memory_format, use_error_model
from dse.training.models import get_model

TABLES = ["exact_s8", "mul8s_1L2J", "mul8s_1KV9", "mitchell_w6_s8", "mitchell_w6_s8+error_model"]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=TABLES)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = get_model("mobilenet_v2_cifar").eval()
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    layers = list(targetable_layers(base))
    ranges = calibrate_ranges(base, [x[:64]], layers)
    variants: dict[str, nn.Module] = {
        "exact_nchw": copy.deepcopy(base),
        "exact_channels_last": copy.deepcopy(base).to(memory_format=torch.channels_last),
    }
    inputs = {"exact_channels_last": x.contiguous(memory_format=torch.channels_last)}
    bit_exact = True
    for variant in args.tables:
        table, _, forward = variant.partition("+")
        model = apply_assignment(base, {n: LayerConfig(multiplier=table) for n in layers}, ranges)
        model.eval()
        if forward:
            use_error_model(model, forward)
            fit_error_models(model, x[:64])
        else:  # the bit-exact training forward: same values as evaluation
            with torch.no_grad():
                evaluated = model(x[:8])
            trained = model(x[:8].clone().requires_grad_(True))  # same mode, autograd on
            bit_exact &= torch.equal(evaluated, trained.detach())
        # in the layout retraining gives it (RetrainingClassifier)
        layout = training_memory_format(model)
        variants[variant] = model.to(memory_format=layout)
        inputs[variant] = x.contiguous(memory_format=layout)
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in variants.items()}
    for k, m in variants.items():
        m.train()
        train_step(m, optimizers[k], inputs.get(k, x), y)  # warm-up (and the kernel's build, once)
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
        for k, m in variants.items():
            samples[k].append(train_step(m, optimizers[k], inputs.get(k, x), y))
    exact_s = min(statistics.median(samples["exact_nchw"]), statistics.median(samples["exact_channels_last"]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {len(layers)} layers")
    print(f"exact fp32 training step: {exact_s * 1e3:.0f} ms")
    ratios = {}
    for table in args.tables:
        step = statistics.median(samples[table])
        ratios[table] = step / exact_s
        paths = sorted({getattr(m, "path", "-") for m in targetable_layers(variants[table]).values()})
        print(f"{table:>28}: {step * 1e3:7.0f} ms, {ratios[table]:5.2f}x exact (paths {', '.join(paths)})")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB (ru_maxrss)")
    headline = ratios.get("mul8s_1KV9", max(ratios.values()))
    print(f"train_step_ratio={headline:.3f} bit_exact_forward={'true' if bit_exact else 'false'}")


if __name__ == "__main__":
    main()
