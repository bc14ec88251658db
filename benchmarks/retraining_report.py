"""Aggressive assignments of MobileNetV2-for-CIFAR before and after approximate retraining.

One assignment per knob, each losing several points before retraining (picked with the
search subset), then retrained with ``dse.candidates.retraining.retrain_candidate`` exactly as
``python -m dse.retrain`` does, and evaluated bit-exactly on the full 10,000-image test set:

- ``decimals_dw1``: one decimal place on every depthwise conv (paper 1's knob);
- ``int4_w4a4``: int4 weights and int4 activations on every conv/linear (paper 3's knob);
- ``mitchell_w6``: Mitch-w6 on every conv/linear (paper 2's multiplier), trained twice: with
  the bit-exact forward and with the fitted error model (``retrain.forward``);
- ``evoapprox_1L2J``: EvoApprox mul8s_1L2J on every conv/linear.

    python benchmarks/retraining_report.py --npz /path/cifar10.npz
    python benchmarks/retraining_report.py --npz /path/cifar10.npz --only mitchell_w6 --epochs 2

Each run is an MLflow run (``tracking``, default ``mlruns/`` of the working directory) and
resumes from its checkpoint if interrupted. Writes ``retraining_report.csv``; the last line is
``retrained=<n> mean_gain_points=<mean accuracy gain over the assignments, points>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from dse.assignment import Assignment, LayerConfig, targetable_layers
from dse.candidates.retraining import retrain_candidate
from dse.config_building import build_tracker, build_trained_model, candidate_evaluator, retrain_settings
from dse.config_paths import CONFIG_DIR

# name -> (layer groups, knobs, training forward)
ASSIGNMENTS: dict[str, tuple[list[str] | None, dict[str, object], str]] = {
    "decimals_dw1": (["depthwise"], {"decimals": 1}, "auto"),
    "int4_w4a4": (None, {"weight_format": "int4", "activation_format": "int4"}, "auto"),
    "mitchell_w6": (None, {"multiplier": "mitchell_w6_s8"}, "bit_exact"),
    "mitchell_w6_error_model": (None, {"multiplier": "mitchell_w6_s8"}, "error_model"),
    "evoapprox_1L2J": (None, {"multiplier": "mul8s_1L2J"}, "auto"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", required=True, help="CIFAR-10 .npz (x_train/y_train/x_test/y_test)")
    parser.add_argument("--only", nargs="+", choices=list(ASSIGNMENTS), default=list(ASSIGNMENTS))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-subset", type=int, default=10000, help="stratified training images per epoch")
    parser.add_argument("--out", default="retraining_report.csv")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. retrain.lr=0.002")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            [
                "data=cifar10_npz",
                f"data.path={args.npz}",
                "data@retrain.data=cifar10_npz",
                f"retrain.data.path={args.npz}",
                f"retrain.data.train_subset={args.train_subset}",
                f"retrain.epochs={args.epochs}",
                *args.overrides,
            ],
        )
    model = build_trained_model(cfg.model)
    candidates = candidate_evaluator(cfg, model)  # the full test set
    tracker = build_tracker(cfg, experiment="retraining_report")
    retrain = retrain_settings(cfg)
    layers = list(targetable_layers(model))
    rows = []
    baseline = candidates.evaluate({}, timing=False).metrics
    for name in args.only:
        groups, knobs, forward = ASSIGNMENTS[name]
        patterns = [cfg.model.layer_groups[g] for g in groups] if groups else [".*"]
        assignment: Assignment = {
            n: LayerConfig(**knobs)  # type: ignore[arg-type]
            for n in layers
            if any(re.fullmatch(p, n) for p in patterns)
        }
        settings = dataclasses.replace(retrain, forward=forward)
        result = retrain_candidate(model, assignment, candidates, settings, f"report-{name}", tracker)
        rows.append(
            {
                "assignment": name,
                "layers": len(assignment),
                "training_forward": result.training_forward,
                "epochs": result.epochs,
                "train_images_per_epoch": args.train_subset,
                "baseline_top1": baseline["accuracy"],
                "before_top1": result.accuracy_before,
                "after_top1": result.accuracy_after,
                "gain_points": 100 * (result.accuracy_after - result.accuracy_before),
                "energy_uj": result.energy_uj,
                "baseline_energy_uj": baseline["energy_uj"],
                "wall_time_s": result.wall_time_s,
                "test_images": candidates.evaluator.n_images,
                "mlflow_run_id": result.run_id,
            }
        )
        pd.DataFrame(rows).to_csv(args.out, index=False)  # after each: an interruption loses nothing
    table = pd.DataFrame(rows)
    print(table.drop(columns=["mlflow_run_id"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {Path(args.out).resolve()}")
    print(f"retrained={len(table)} mean_gain_points={table['gain_points'].mean():.2f}")


if __name__ == "__main__":
    main()
