"""Paper 4: aggressive assignments of every knob, before and after approximate retraining.

Each assignment loses several points before retraining; it is fine-tuned with its approximation in
the forward pass (``dse.candidates.retraining.retrain_candidate``, exactly as ``python -m dse.retrain``) and
evaluated bit-exactly on the full test set. Checkpoints make an interrupted stage resume.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from dse.assignment import Assignment, LayerConfig, targetable_layers
from dse.candidates.retraining import retrain_candidate
from dse.config_building import retrain_settings
from dse.report.context import ReportContext
from dse.report.markdown import pct, points, table
from dse.report.stage import Stage
from dse.tracking.pareto import non_dominated

__all__ = ["STAGE", "assignment_of"]

NAME = "retraining"


def assignment_of(ctx: ReportContext, groups: list[str] | None, knobs: Mapping[str, object]) -> Assignment:
    """``knobs`` on every layer of ``groups`` (model.layer_groups; None: every conv/linear layer)."""
    patterns = [ctx.cfg.model.layer_groups[g] for g in groups] if groups else [".*"]
    return {
        n: LayerConfig(**knobs)  # type: ignore[arg-type]
        for n in targetable_layers(ctx.model)
        if any(re.fullmatch(p, n) for p in patterns)
    }


def compute(ctx: ReportContext) -> None:
    s = ctx.settings.retraining
    retrain = retrain_settings(
        ctx.cfg, epochs=s.epochs, data={"train_subset": s.train_subset}, ckpt_dir=str(ctx.work_dir / "checkpoints")
    )
    candidates = ctx.test_set
    log = ctx.rows(NAME, "retraining", ["assignment"])
    if not log.has(assignment="fp32"):
        m = candidates.evaluate({}, timing=False).metrics
        log.add(
            {
                "assignment": "fp32",
                "layers": 0,
                "before_top1": m["accuracy"],
                "after_top1": m["accuracy"],
                "energy_uj": m["energy_uj"],
                "test_images": candidates.evaluator.n_images,
            }
        )
    for name, spec in s.assignments.items():
        if log.has(assignment=name):
            continue
        groups = list(spec.groups) if spec.groups else None
        assignment = assignment_of(ctx, groups, OmegaConf.to_container(spec.knobs))  # type: ignore[arg-type]
        settings = dataclasses.replace(retrain, forward=str(spec.forward))
        result = retrain_candidate(ctx.model, assignment, candidates, settings, f"report-{name}", ctx.tracker)
        log.add(
            {
                "assignment": name,
                "layers": len(assignment),
                "knobs": str(OmegaConf.to_container(spec.knobs)),
                "groups": ",".join(groups) if groups else "all",
                "training_forward": result.training_forward,
                "epochs": result.epochs,
                "train_images_per_epoch": s.train_subset,
                "before_top1": result.accuracy_before,
                "after_top1": result.accuracy_after,
                "after_top5": result.accuracy_top5_after,
                "energy_uj": result.energy_uj,
                "wall_time_s": result.wall_time_s,
                "test_images": candidates.evaluator.n_images,
                "mlflow_run_id": result.run_id,
            }
        )


def _plot(rows: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for column, label, marker in (("before_top1", "before retraining", "o"), ("after_top1", "after retraining", "s")):
        energy, acc = rows["energy_uj"].to_numpy(), rows[column].to_numpy()
        ax.scatter(energy, 100 * acc, marker=marker, label=label)
        keep = non_dominated(acc, energy)
        order = np.argsort(energy[keep])
        ax.step(energy[keep][order], 100 * acc[keep][order], where="post", alpha=0.6)
    for _, r in rows.iterrows():
        ax.annotate(
            r["assignment"],
            (r["energy_uj"], 100 * r["after_top1"]),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("modeled energy per inference (uJ, log)")
    ax.set_ylabel("top-1 on the test set (%)")
    ax.set_title("Aggressive assignments: the front before and after retraining")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(ctx: ReportContext) -> str:
    rows = ctx.table(NAME, "retraining")
    base = rows[rows["assignment"] == "fp32"].iloc[0]
    rest = rows[rows["assignment"] != "fp32"]
    figure = ctx.figure("retraining_front.png")
    _plot(rows, str(figure))
    body = [
        table(
            [
                "assignment",
                "layers",
                "training forward",
                "top-1 before",
                "top-1 after",
                "gain (points)",
                "gap to fp32 after",
                "energy (uJ)",
                "energy vs fp32",
                "retraining time (s)",
            ],
            [
                [
                    r["assignment"],
                    int(r["layers"]),
                    r["training_forward"],
                    pct(r["before_top1"]),
                    pct(r["after_top1"]),
                    points(r["after_top1"] - r["before_top1"]),
                    points(r["after_top1"] - base["after_top1"]),
                    f"{r['energy_uj']:.1f}",
                    f"{r['energy_uj'] / base['energy_uj']:.2f}x",
                    f"{r['wall_time_s']:.0f}",
                ]
                for _, r in rest.iterrows()
            ],
        )
    ]
    before = rows[non_dominated(rows["before_top1"].to_numpy(), rows["energy_uj"].to_numpy())]
    after = rows[non_dominated(rows["after_top1"].to_numpy(), rows["energy_uj"].to_numpy())]
    gains = 100 * (rest["after_top1"] - rest["before_top1"])
    epochs, images = int(rest["epochs"].iloc[0]), int(rest["train_images_per_epoch"].iloc[0])
    return "\n\n".join(
        [
            f"Each assignment was fine-tuned for {epochs} epoch(s) of {images:,} training images (stratified) with "
            f"its approximation in the forward pass and straight-through gradients, then evaluated bit-exactly on "
            f"{int(base['test_images']):,} test images. The exact float32 model scores {pct(base['after_top1'])}.",
            *body,
            f"Retraining won back {gains.min():.1f} to {gains.max():.1f} points (mean {gains.mean():.1f}). "
            f"The front (accuracy against energy) before retraining: {', '.join(before['assignment'])}; "
            f"after: {', '.join(after['assignment'])}.",
            f"![front before and after retraining]({ctx.link(figure)})",
        ]
    )


STAGE = Stage(NAME, "Paper 4: aggressive assignments before and after approximate retraining", compute, render)
