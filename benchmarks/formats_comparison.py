"""Uniform number formats on MobileNetV2-for-CIFAR: accuracy, energy and modeled latency vs fp32.

Every Conv2d/Linear takes the same format for weights and activations. The
narrowest format within 1 point of fp32 is picked from those evaluated.
Latency is the first-order accelerator model (dse/cost/latency.py), never the
emulation's wall-clock time.

    python benchmarks/formats_comparison.py                      # shipped 2,000-image subset
    python benchmarks/formats_comparison.py --full               # full test set (torchvision's downloader, cached)
    python benchmarks/formats_comparison.py --full --npz /path/cifar10.npz
"""

from __future__ import annotations

import argparse
import logging
import warnings

from hydra.utils import instantiate

from dse.assignment import LayerConfig, targetable_layers
from dse.candidates.evaluation import Evaluator
from dse.config_building import build_trained_model, candidate_evaluator
from dse.config_paths import CONFIG_DIR
from dse.training.cifar10 import CIFAR10DataModule

FORMATS = [
    "fp32", "bf16", "fp16", "fp8_e5m2", "fp8_e4m3", "e5m2", "e4m3", "e3m4", "e3m2", "e2m3", "e3m2_raw", "e2m3_raw",
    "e2m2", "e3m1", "e2m1", "int16", "int8", "int6", "int5", "int4",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="evaluate on the full 10,000-image test set")
    parser.add_argument("--npz", help="with --full: a CIFAR-10 .npz of your own instead of torchvision's download")
    parser.add_argument("--formats", nargs="+", default=FORMATS)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        npz = ["data@final_eval.data=cifar10_npz", f"final_eval.data.path={args.npz}"] if args.npz else []
        cfg = compose("config", overrides=["study=mobilenet_cifar10", *npz])
    model = build_trained_model(cfg.model)
    data = instantiate(cfg.final_eval.data) if args.full else CIFAR10DataModule(path="cifar10_test_subset")
    evaluator = Evaluator(data, timing_repeats=1)
    # activation ranges calibrated on the search set, as the search does; the reported images never choose them
    candidates = candidate_evaluator(cfg, model).on(evaluator)
    layers = list(targetable_layers(model))
    results = []
    for fmt in args.formats:
        assignment = {} if fmt == "fp32" else {n: LayerConfig(weight_format=fmt, activation_format=fmt) for n in layers}
        m = candidates.evaluate(assignment, timing=False).metrics
        results.append((fmt, m))
    base = results[0][1]
    print(
        f"MobileNetV2-for-CIFAR on {evaluator.n_images} test images ({data.test_split} half); "
        f"hardware {cfg.hardware.energy.name} / {cfg.hardware.latency.name}"
    )
    print(
        f"{'format':>9} {'bits':>4} {'top-1':>7} {'drop':>6} {'energy':>9} {'vs fp32':>8} "
        f"{'latency':>10} {'speedup':>8}"
    )
    from dse.numerics.formats import parse_format

    ok = []
    for fmt, m in results:
        drop = 100 * (base["accuracy"] - m["accuracy"])
        bits = parse_format(fmt).bits
        if drop <= 1.0:
            ok.append((bits, fmt))
        print(
            f"{fmt:>9} {bits:>4} {100 * m['accuracy']:>6.2f}% {drop:>5.2f} {m['energy_uj']:>7.1f}uJ "
            f"{base['energy_uj'] / m['energy_uj']:>7.2f}x {m['modeled_latency_us']:>8.1f}us "
            f"{base['modeled_latency_us'] / m['modeled_latency_us']:>7.2f}x"
        )
    bits, fmt = min(ok)
    print(f"narrowest uniform format within 1 point of fp32: {fmt} ({bits} bits)")


if __name__ == "__main__":
    main()
