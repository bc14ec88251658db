"""Paper 4: aggressive assignments of every knob, before and after approximate retraining.

Each assignment loses several points before retraining; it is fine-tuned with its approximation in
the forward pass (``dse.candidates.retraining.retrain_candidate``, exactly as ``python -m dse.retrain``), once per
seed, and evaluated bit-exactly on the held-out images, beside two controls: the exact model fine-tuned with the
same images and epochs, and batch-norm re-estimation alone. Checkpoints make an interrupted stage resume.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf

from dse.assignment import Assignment, LayerConfig, targetable_layers
from dse.candidates.accuracy_statistics import pack_correct
from dse.candidates.batchnorm_reestimation import reestimate_batchnorm
from dse.candidates.retraining import RetrainResult, RetrainSettings, retrain_candidate
from dse.config_building import build_trained_model, candidate_evaluator, retrain_settings
from dse.report.context import ReportContext
from dse.report.correctness import accuracy_cell, difference_cell
from dse.report.markdown import table
from dse.report.stage import Stage
from dse.training.classifier import in_layout

__all__ = ["STAGE", "assignment_of"]

NAME = "retraining"
EXACT = "fp32"
BEFORE, RETRAINED, FINETUNED, BATCHNORM = "as_is", "retrained", "fp32_finetune", "batchnorm_reestimated"


def assignment_of(ctx: ReportContext, groups: list[str] | None, knobs: Mapping[str, object]) -> Assignment:
    """``knobs`` on every layer of ``groups`` (model.layer_groups; None: every conv/linear layer)."""
    patterns = [ctx.cfg.model.layer_groups[g] for g in groups] if groups else [".*"]
    return {
        n: LayerConfig(**knobs)  # type: ignore[arg-type]
        for n in targetable_layers(ctx.model)
        if any(re.fullmatch(p, n) for p in patterns)
    }


def _retrained_row(result: RetrainResult, seed: int) -> dict[str, object]:
    return {
        "seed": seed,
        "top1": result.accuracy_after,
        "top5": result.accuracy_top5_after,
        "correct": result.correct_after,
        "training_forward": result.training_forward,
        "epochs": result.epochs,
        "wall_time_s": result.wall_time_s,
    }


def _training_batches(settings: RetrainSettings, channels_last: bool) -> Iterator[torch.Tensor]:
    """The retraining's own training images, ``settings.epochs`` times, preprocessed as for training."""
    data = settings.data
    assert data is not None
    data.prepare_data()
    data.setup("fit")
    for _ in range(int(settings.epochs)):
        for x, y in data.train_dataloader():
            yield in_layout(data.on_after_batch_transfer((x, y), 0)[0], channels_last)


def _batchnorm_control(ctx: ReportContext, assignment: Assignment, settings: RetrainSettings) -> dict[str, object]:
    """``assignment`` on the model with its BatchNorms unfolded, their statistics re-estimated on the
    retraining's images with the approximation in the forward pass, then measured on the held-out images."""
    unfolded = build_trained_model(OmegaConf.merge(ctx.cfg.model, {"fold_batchnorm": False}))
    candidates = candidate_evaluator(ctx.cfg, unfolded).on(ctx.test_set.evaluator)
    candidate = candidates.candidate(assignment)
    started = time.perf_counter()
    reestimate_batchnorm(candidate, _training_batches(settings, candidates.evaluator.channels_last))
    top1, top5 = candidates.evaluator.correct(candidate)
    return {
        "top1": int(top1.sum()) / len(top1),
        "top5": int(top5.sum()) / len(top5),
        "correct": pack_correct(top1),
        "wall_time_s": time.perf_counter() - started,
    }


def compute(ctx: ReportContext) -> None:
    s = ctx.settings.retraining
    base = retrain_settings(
        ctx.cfg, epochs=s.epochs, data={"train_subset": s.train_subset}, ckpt_dir=str(ctx.work_dir / "checkpoints")
    )
    candidates = ctx.test_set
    log = ctx.rows(NAME, "retraining", ["assignment", "variant", "seed"])
    common = {"epochs": s.epochs, "train_images_per_epoch": s.train_subset}

    def measured(name: str, assignment: Assignment, layers: int) -> dict[str, Any]:
        if not log.has(assignment=name, variant=BEFORE, seed=-1):
            log.add({"assignment": name, "variant": BEFORE, "seed": -1, "layers": layers, **ctx.measure(assignment)})
        return log.get(assignment=name, variant=BEFORE)

    exact = measured(EXACT, {}, 0)
    for name, knobs in s.baselines.items():  # measured as they are, never retrained
        measured(str(name), assignment_of(ctx, None, OmegaConf.to_container(knobs)), 0)  # type: ignore[arg-type]
    for seed in s.seeds:  # control: the exact model fine-tuned with the same images, epochs and seed
        if not log.has(assignment=EXACT, variant=FINETUNED, seed=seed):
            settings = dataclasses.replace(base, seed=int(seed))
            before = {"accuracy": float(exact["top1"]), "energy_uj": float(exact["energy_uj"])}
            result = retrain_candidate(
                ctx.model, {}, candidates, settings, f"report-fp32-seed{seed}", ctx.tracker, before=before
            )
            log.add(
                {
                    "assignment": EXACT,
                    "variant": FINETUNED,
                    **_retrained_row(result, int(seed)),
                    **common,
                    "images": exact["images"],
                    "energy_uj": exact["energy_uj"],
                }
            )
    for name, spec in s.assignments.items():
        groups = list(spec.groups) if spec.groups else None
        assignment = assignment_of(ctx, groups, OmegaConf.to_container(spec.knobs))  # type: ignore[arg-type]
        before = measured(str(name), assignment, len(assignment))
        extra = {"images": before["images"], "energy_uj": before["energy_uj"], "layers": len(assignment), **common}
        for seed in s.seeds:
            if log.has(assignment=name, variant=RETRAINED, seed=seed):
                continue
            settings = dataclasses.replace(base, forward=str(spec.forward), seed=int(seed))
            metrics = {"accuracy": float(before["top1"]), "energy_uj": float(before["energy_uj"])}
            result = retrain_candidate(
                ctx.model, assignment, candidates, settings, f"report-{name}-seed{seed}", ctx.tracker, before=metrics
            )
            log.add({"assignment": name, "variant": RETRAINED, **_retrained_row(result, int(seed)), **extra})
        if s.batchnorm_control and not log.has(assignment=name, variant=BATCHNORM, seed=-1):
            log.add(
                {
                    "assignment": name,
                    "variant": BATCHNORM,
                    "seed": -1,
                    **_batchnorm_control(ctx, assignment, base),
                    **extra,
                }
            )


def _plot(rows: pd.DataFrame, assignments: list[str], baselines: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    first = rows[rows["variant"] == BEFORE].set_index("assignment")
    for name in [EXACT, *baselines]:
        ax.scatter(
            first.loc[name, "energy_uj"],
            100 * first.loc[name, "top1"],
            marker="*",
            s=160,
            zorder=5,
            label=f"{name} (baseline, as is)",
        )
    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    for i, name in enumerate(assignments):
        color = colors[i % len(colors)]
        energy, start = first.loc[name, "energy_uj"], 100 * first.loc[name, "top1"]
        after = 100 * rows[(rows["assignment"] == name) & (rows["variant"] == RETRAINED)]["top1"]
        ax.scatter(energy, start, color=color, marker="o", label=f"{name}: as is -> retrained")
        if not after.empty:
            ax.annotate("", (energy, after.mean()), (energy, start), arrowprops={"arrowstyle": "->", "color": color})
            ax.errorbar(
                energy,
                after.mean(),
                yerr=[[after.mean() - after.min()], [after.max() - after.mean()]],
                color=color,
                marker="s",
                capsize=3,
            )
        bn = rows[(rows["assignment"] == name) & (rows["variant"] == BATCHNORM)]
        if not bn.empty:
            ax.scatter(energy * 1.06, 100 * bn["top1"], color=color, marker="x", s=50)
    ax.scatter([], [], color="grey", marker="x", label="batch-norm re-estimation only")
    ax.set_xscale("log")
    ax.set_ylim(0, 100)
    ax.set_xlabel("modeled energy per inference (uJ, log)")
    ax.set_ylabel("top-1 on the held-out images (%)")
    ax.set_title("Before (circle) and after retraining (square: mean, bar: seeds' range)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _spread(values: pd.Series) -> str:
    """``86.24% (85.9-86.5), 3 seeds``"""
    if values.empty:
        return "not run"
    return f"{100 * values.mean():.2f}% ({100 * values.min():.2f}-{100 * values.max():.2f}), {len(values)} seeds"


def render(ctx: ReportContext) -> str:
    rows = ctx.table(NAME, "retraining")
    s = ctx.settings.retraining
    first = rows[rows["variant"] == BEFORE].set_index("assignment")
    exact = first.loc[EXACT]
    assignments = [
        n for n in rows["assignment"].unique() if (rows[(rows["assignment"] == n)]["variant"] == RETRAINED).any()
    ]
    baselines = [n for n in first.index if n != EXACT and n not in assignments]
    figure = ctx.figure("retraining_front.png")
    _plot(rows, assignments, baselines, str(figure))
    finetuned = rows[(rows["assignment"] == EXACT) & (rows["variant"] == FINETUNED)]
    lines = [
        [
            EXACT,
            "-",
            f"{exact['energy_uj']:.1f}",
            accuracy_cell(exact),
            "-",
            _spread(finetuned["top1"]) + " (fp32 fine-tune)",
            "-",
        ]
    ]
    lines += [
        [n, "-", f"{first.loc[n, 'energy_uj']:.1f}", accuracy_cell(first.loc[n]), "-", "not retrained (baseline)", "-"]
        for n in baselines
    ]
    findings = []
    for name in assignments:
        mine = rows[rows["assignment"] == name]
        after = mine[mine["variant"] == RETRAINED].sort_values("seed")
        bn = mine[mine["variant"] == BATCHNORM]
        as_is = first.loc[name]
        paired = "; ".join(f"seed {int(r['seed'])}: {difference_cell(r, exact)}" for _, r in after.iterrows())
        lines.append(
            [
                name,
                str(after["training_forward"].iloc[0]) if not after.empty else "-",
                f"{as_is['energy_uj']:.1f}",
                accuracy_cell(as_is),
                accuracy_cell(bn.iloc[0]) if not bn.empty else "not run",
                _spread(after["top1"]),
                paired or "-",
            ]
        )
        if not after.empty and not bn.empty:
            findings.append(
                f"{name}: batch-norm re-estimation alone {100 * (bn['top1'].iloc[0] - as_is['top1']):+.2f} points, "
                f"retraining {100 * (after['top1'].mean() - as_is['top1']):+.2f} (so "
                f"{100 * (after['top1'].mean() - bn['top1'].iloc[0]):+.2f} beyond the control)"
            )
    best = max(
        ((n, rows[(rows["assignment"] == n) & (rows["variant"] == RETRAINED)]["top1"].mean()) for n in assignments),
        key=lambda kv: kv[1],
        default=None,
    )
    text = [
        f"Each assignment fine-tuned for {s.epochs} epoch(s) of {int(s.train_subset):,} stratified training images "
        f"with its approximation in the forward pass and straight-through gradients, once per seed "
        f"({', '.join(str(x) for x in s.seeds)}), then measured bit-exactly on the {int(exact['images']):,} held-out "
        "test images. **Controls**: the exact float32 model fine-tuned with the same images, epochs and seeds; and "
        "each assignment with only its batch-norm statistics re-estimated on the same images (BatchNorms unfolded "
        "and kept float32 for this control; no weight changes). Baselines are measured as they are.",
        table(_COLUMNS, lines),
    ]
    if not finetuned.empty:
        moved = 100 * (finetuned["top1"].mean() - exact["top1"])
        text.append(
            f"**The float32 fine-tune control** moves the exact model by {moved:+.2f} "
            "points on average: a retrained assignment is compared with the exact model as shipped, and this is how "
            "much of any gain the extra training alone could explain."
        )
    if findings:
        text.append("**What retraining adds beyond re-estimating batch norm:** " + "; ".join(findings) + ".")
    for name in baselines:
        if best is not None:
            verdict = "beats" if first.loc[name, "top1"] > best[1] else "does not beat"
            text.append(
                f"**{name} without retraining** ({100 * first.loc[name, 'top1']:.2f}%) {verdict} the best retrained "
                f"assignment ({best[0]}, mean {100 * best[1]:.2f}%)."
            )
    text.append(f"![before and after retraining]({ctx.link(figure)})")
    return "\n\n".join(text)


_COLUMNS = ["assignment", "training forward", "energy (uJ)", "as is [95% interval]", "batch norm re-estimated"]
_COLUMNS += ["retrained: mean (min-max) over seeds", "retrained vs exact (points, McNemar p)"]


STAGE = Stage(NAME, "Paper 4: approximate retraining, with seeds and controls", compute, render, held_out_table=NAME)
