"""Paper 4's robustness analysis: held-out accuracy against each multiplier's mean relative error, for the
shipped GRU (JapaneseVowels) and the shipped MobileNetV2 (CIFAR-10), before and after a short retraining.

Every shipped 8-bit table (EvoApprox signed and unsigned, exact) and Mitch-w2..w8 (signed) is put on every
layer of each model (for the GRU: both weight matrices and the classifier); accuracy is bit-exact on the
held-out half of the test set (the GRU: 183 sequences; MobileNetV2: ``--images`` of its 5,000), with
activation ranges calibrated on training data as the search does. The ``--worst`` least accurate per model
are then retrained once (``retrain_candidate``, as ``python -m dse.retrain``: the study's ``retrain`` settings,
the GRU 10 epochs of its 270 sequences, MobileNetV2 one epoch of ``--train-subset`` images) and
re-measured on the same held-out images, which chose nothing.

    python benchmarks/recurrent_robustness.py --npz /path/cifar10.npz
    python benchmarks/recurrent_robustness.py --models gru          # the GRU alone (offline, about a minute)

Writes ``--out`` (CSV) and ``--plot`` (PNG: accuracy vs mean relative error, log scale, one panel per
model, each retrained point joined to its accuracy after). Last line:
``gru_worst_before=<%> gru_worst_after=<%> mobilenet_worst_before=<%> mobilenet_worst_after=<%>`` (the least
accurate multiplier of each model, before and after its retraining; ``nan`` for a model not run).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from hydra import compose, initialize_config_dir

from dse.assignment import LayerConfig, targetable_layers
from dse.candidates.retraining import retrain_candidate
from dse.config_building import (
    build_tracker,
    build_trained_model,
    candidate_evaluator,
    evaluator_on,
    retrain_settings,
)
from dse.config_paths import CONFIG_DIR
from dse.multipliers import get_multiplier, list_multipliers

MITCHELL = [f"mitchell_w{w}_s8" for w in range(2, 9)]
TITLES = {"gru": "GRU (64 hidden), JapaneseVowels", "mobilenet": "MobileNetV2, CIFAR-10"}


def multipliers() -> list[str]:
    """Every shipped 8-bit table (EvoApprox and exact) and Mitch-w2..w8."""
    tables = [n for n in list_multipliers() if n.startswith(("mul8s_", "mul8u_", "exact_"))]
    return tables + MITCHELL


def overrides(model: str, args: argparse.Namespace) -> list[str]:
    if model == "gru":
        return [
            "study=gru_japanese_vowels",
            "tracking=none" if args.no_tracking else "tracking=mlflow_local",
            *([f"retrain.epochs={args.epochs}"] if args.epochs else []),  # else the study's (10 for 270 sequences)
        ]
    if not args.npz:
        raise SystemExit("MobileNetV2 needs CIFAR-10: --npz /path/cifar10.npz (or DSE_CIFAR10_NPZ), or --models gru.")
    return [
        "study=mobilenet_cifar10_multipliers",
        "tracking=none" if args.no_tracking else "tracking=mlflow_local",
        "data@final_eval.data=cifar10_npz",
        f"final_eval.data.path={args.npz}",
        f"final_eval.data.test_subset={args.images}",
        "data@retrain.data=cifar10_npz",
        f"retrain.data.path={args.npz}",
        f"retrain.data.train_subset={args.train_subset}",
        *([f"retrain.epochs={args.epochs}"] if args.epochs else []),
    ]


def measure(model_name: str, args: argparse.Namespace) -> list[dict[str, object]]:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides(model_name, args))
    model = build_trained_model(cfg.model)
    held_out = candidate_evaluator(cfg, model).on(evaluator_on(cfg, cfg.final_eval.data))
    images = held_out.evaluator.n_images
    layers = list(targetable_layers(model))
    exact = held_out.evaluate({}, timing=False).metrics["accuracy"]
    rows: list[dict[str, object]] = []
    measured: dict[str, dict[str, float]] = {}
    for name in multipliers():
        assignment = {layer: LayerConfig(multiplier=name) for layer in layers}
        measured[name] = held_out.evaluate(assignment, timing=False).metrics
        accuracy = measured[name]["accuracy"]
        rows.append(
            {
                "model": model_name,
                "multiplier": name,
                "mre_pct": get_multiplier(name).error_stats().mre_pct,
                "exact_top1": exact,
                "top1": accuracy,
                "top1_retrained": math.nan,
                "held_out_images": images,
            }
        )
        logging.info("%s %s: %.4f (exact %.4f) on %d held-out", model_name, name, accuracy, exact, images)
    tracker = build_tracker(cfg, experiment="recurrent_robustness")
    retrain = dataclasses.replace(retrain_settings(cfg), ckpt_dir=str(Path(args.ckpt_dir) / model_name))
    for row in sorted(rows, key=lambda r: float(r["top1"]))[: args.worst]:  # type: ignore[arg-type]
        assignment = {layer: LayerConfig(multiplier=str(row["multiplier"])) for layer in layers}
        label = f"{model_name}-{row['multiplier']}"
        before = measured[str(row["multiplier"])]
        result = retrain_candidate(model, assignment, held_out, retrain, label, tracker, before=before)
        row["top1_retrained"] = result.accuracy_after
    return rows


def plot(table: pd.DataFrame, path: Path) -> None:
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = table[table["model"] == model]
        errors = rows["mre_pct"].clip(lower=1e-3)  # exact circuits (0%) at the left edge
        ax.scatter(errors, 100 * rows["top1"], s=18, label="every layer on the multiplier")
        retrained = rows[rows["top1_retrained"].notna()]
        for _, r in retrained.iterrows():
            x = max(float(r["mre_pct"]), 1e-3)
            ax.annotate(
                "",
                (x, 100 * r["top1_retrained"]),
                (x, 100 * r["top1"]),
                arrowprops={"arrowstyle": "->", "color": "tab:green"},
            )
        ax.scatter(
            retrained["mre_pct"].clip(lower=1e-3),
            100 * retrained["top1_retrained"],
            s=18,
            color="tab:green",
            label="after one short retraining",
        )
        ax.axhline(100 * float(rows["exact_top1"].iloc[0]), color="grey", linestyle="--", label="exact float32")
        ax.set_xscale("log")
        ax.set_xlabel("mean relative error of the multiplier, % (log; exact circuits at the left edge)")
        ax.set_ylabel(f"top-1 %, {int(rows['held_out_images'].iloc[0])} held-out inputs")
        ax.set_title(TITLES.get(model, model))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=["gru", "mobilenet"], default=["gru", "mobilenet"])
    parser.add_argument("--npz", default=os.environ.get("DSE_CIFAR10_NPZ"), help="CIFAR-10 .npz (MobileNetV2)")
    parser.add_argument("--images", type=int, default=1000, help="MobileNetV2 held-out images (of 5,000)")
    parser.add_argument("--train-subset", type=int, default=2000, help="MobileNetV2 training images per epoch")
    parser.add_argument("--epochs", type=int, default=None, help="retraining epochs (default: the study's retrain)")
    parser.add_argument("--worst", type=int, default=5, help="retrain this many least accurate per model")
    parser.add_argument("--ckpt-dir", default="checkpoints/recurrent_robustness")
    parser.add_argument("--no-tracking", action="store_true", help="no MLflow runs for the retrainings")
    parser.add_argument("--out", default="recurrent_robustness.csv")
    parser.add_argument("--plot", default="recurrent_robustness.png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows: list[dict[str, object]] = []
    for model in args.models:
        rows += measure(model, args)
        pd.DataFrame(rows).to_csv(args.out, index=False)  # after each model: an interruption loses nothing
    table = pd.DataFrame(rows)
    plot(table, Path(args.plot))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {Path(args.out).resolve()} and {Path(args.plot).resolve()}")
    summary = []
    for model in ("gru", "mobilenet"):
        rows_of = table[table["model"] == model] if len(table) else table
        worst = rows_of.sort_values("top1").iloc[0] if len(rows_of) else None
        before = 100 * float(worst["top1"]) if worst is not None else math.nan
        after = 100 * float(worst["top1_retrained"]) if worst is not None else math.nan
        summary.append(f"{model}_worst_before={before:.2f} {model}_worst_after={after:.2f}")
    print(" ".join(summary))


if __name__ == "__main__":
    main()
