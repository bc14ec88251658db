"""Paper 3: narrow number formats, uniform over the model and per layer group (a study).

Uniform: every conv/linear layer takes one format for weights and activations, on the held-out images.
Per layer group: the committed ``mobilenet_cifar10_formats`` study (accuracy, energy and modeled
accelerator latency), its front re-evaluated on the full test set. The narrowest configuration within
``max_drop_points`` of float32 is the front point with the lowest modeled latency that stays within it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dse.numerics.formats import parse_format
from dse.report.context import ReportContext
from dse.report.correctness import accuracy_cell
from dse.report.figures import accuracy_bars
from dse.report.markdown import pct, points, table
from dse.report.paper4_retraining import assignment_of
from dse.report.stage import Stage
from dse.report.studies import run_study, study_trials

__all__ = ["STAGE", "narrowest_within"]

NAME = "formats"


def compute(ctx: ReportContext) -> None:
    s = ctx.settings.formats
    log = ctx.rows(NAME, "uniform", ["format"])
    for fmt in s.uniform:
        if log.has(format=fmt):
            continue
        knobs = {} if fmt == "fp32" else {"weight_format": str(fmt), "activation_format": str(fmt)}
        measured = ctx.measure(assignment_of(ctx, None, knobs) if knobs else {})
        log.add({"format": fmt, "bits": parse_format(str(fmt)).bits, **measured, "evaluation_set": "held_out"})
    study = run_study(ctx, str(s.study), list(s.study_overrides))
    study_trials(study).to_csv(ctx.stage_dir(NAME) / "study_trials.csv", index=False)


def narrowest_within(uniform: pd.DataFrame, limit: float) -> pd.Series:
    """The uniform format with the fewest bits within ``limit`` points of float32's top-1 (ties: by name).

    ``uniform``: this stage's ``uniform`` table (one row per format, float32 among them)."""
    fp32 = uniform[uniform["format"] == "fp32"].iloc[0]
    within = uniform[100 * (fp32["top1"] - uniform["top1"]) <= limit]
    return within.sort_values(["bits", "format"]).iloc[0]


def _uniform_rows(uniform: pd.DataFrame, base: pd.Series) -> list[list[object]]:
    """The uniform formats' table rows."""
    rows = []
    for _, r in uniform.iterrows():
        rows.append(
            [
                r["format"],
                int(r["bits"]),
                accuracy_cell(r) if "images" in r else pct(r["top1"]),
                points(r["top1"] - base["top1"]),
                f"{r['energy_uj']:.1f}",
                f"{base['energy_uj'] / r['energy_uj']:.2f}x",
                f"{r['modeled_latency_us']:.1f}",
                f"{base['modeled_latency_us'] / r['modeled_latency_us']:.2f}x",
            ]
        )
    return rows


def _minifloats_and_integers(uniform: pd.DataFrame, base: pd.Series, limit: float) -> str:
    """Which minifloats and integers stay within ``limit``, and how the minifloats were scaled."""
    minifloats = uniform[uniform["format"].str.match(r"e\dm\d")]
    mini_drop = 100 * (base["top1"] - minifloats["top1"])
    within = minifloats.loc[mini_drop <= limit]
    fewest = within[within["bits"] == within["bits"].min()]
    mini_ok = ", ".join(sorted(fewest["format"])) + f" ({int(fewest['bits'].iloc[0])} bits)" if len(fewest) else "none"
    mini_bad = list(minifloats.loc[(mini_drop > limit)]["format"])
    ints = uniform[uniform["format"].str.startswith("int")]
    ints_ok = list(ints.loc[100 * (base["top1"] - ints["top1"]) <= limit, "format"])
    scalings = sorted({getattr(parse_format(str(f)), "scaling", "none") for f in minifloats["format"]})
    return (
        f"**Minifloats and integers.** The narrowest minifloats within {limit:g} point: {mini_ok}; these lose "
        f"more: {', '.join(mini_bad) or 'none'}; integer formats within it: {', '.join(ints_ok) or 'none'}. "
        f"The minifloats here carry a power-of-two exponent bias per {' / '.join(scalings)} of the weights (per "
        "tensor for activations), as the integers carry a scale: the comparison is between number formats, not "
        "between scaled and unscaled ones (`e<E>m<M>_raw` keeps the fixed IEEE bias)."
    )


def _per_group(ctx: ReportContext, limit: float, uniform_speedup: float, narrowest: str) -> list[str]:
    """The per-layer-group study: its fastest configuration within ``limit`` points, against the paper."""
    s = ctx.settings.formats
    trials = ctx.table(NAME, "study_trials")
    groups = [c for c in trials.columns if c.startswith("param.")]
    front = trials[trials["on_front"]].copy()
    exact = trials[trials["trial"] == 0].iloc[0]  # the study's all-exact baseline: the same search set
    ok = front[100 * (exact["accuracy"] - front["accuracy"]) <= limit]
    n_trials = len(trials)
    if ok.empty:
        return [
            f"**Per layer group** (study `{s.study}`, {n_trials} trials on the search set): no front point stays "
            f"within {limit:g} point of float32 on the search set."
        ]
    best = ok.sort_values("modeled_latency_us").iloc[0]
    speedup = exact["modeled_latency_us"] / best["modeled_latency_us"]
    return [
        f"**Per layer group** (study `{s.study}`, {n_trials} trials on the search set, {len(front)} on the "
        "front): the configuration with the lowest modeled "
        f"latency within {limit:g} point of float32 on the search set is trial {int(best['trial'])}: "
        f"{pct(best['accuracy'])} on the search set ({points(best['accuracy'] - exact['accuracy'])} points), "
        + (f"{pct(best['final_accuracy'])} on the held-out images, " if pd.notna(best.get("final_accuracy")) else "")
        + f"**{speedup:.2f}x modeled speedup** and "
        f"{exact['energy_uj'] / best['energy_uj']:.2f}x less energy than float32, against the paper's 7.6x:",
        table(
            ["layer group", "weights", "activations"],
            [
                [g, best.get(f"param.weight_format.{g}", "exact"), best.get(f"param.activation_format.{g}", "exact")]
                for g in dict.fromkeys(c.split(".", 2)[2] for c in groups)
            ],
        ),
        f"**Against the paper's 7.6x.** {speedup:.1f}x here. The paper's speedup is measured on its own "
        "accelerator, where float32 is the slow baseline of a narrow datapath; ours is a first-order model "
        "whose gain is capped by how many narrower multipliers fit in a float32 MAC's area and by memory "
        "bandwidth, so the two factors are not the same quantity."
        + (
            f" The {n_trials}-trial study found less than the uniform {narrowest} "
            f"({uniform_speedup:.2f}x): uniform assignments are "
            "not seeded into it unless `study.seed_uniform=true`."
            if uniform_speedup > speedup
            else ""
        ),
    ]


def _plot_formats(uniform: pd.DataFrame, base: pd.Series, path: Path) -> bool:
    """The uniform formats' accuracies with their intervals (stages stored with per-image results only)."""
    if "images" not in uniform.columns:
        return False
    labels = [f"{r['format']} ({int(r['bits'])} bits)" for _, r in uniform.iterrows()]
    accuracy_bars(uniform, labels, float(base["top1"]), path, "Weights and activations of every layer in one format")
    return True


def render(ctx: ReportContext) -> str:
    limit = float(ctx.settings.formats.max_drop_points)
    uniform = ctx.table(NAME, "uniform")
    base = uniform[uniform["format"] == "fp32"].iloc[0]
    rows = _uniform_rows(uniform, base)
    narrow_row = narrowest_within(uniform, limit)
    bits, narrowest = int(narrow_row["bits"]), str(narrow_row["format"])
    uniform_speedup = base["modeled_latency_us"] / narrow_row["modeled_latency_us"]
    figure = ctx.figure("paper3_formats.png")
    plotted = _plot_formats(uniform, base, figure)
    columns = ["format", "bits", "top-1", "vs fp32 (points)", "energy (uJ)", "energy saving"]
    columns += ["modeled latency (us)", "modeled speedup"]
    parts = [
        f"**Uniform formats** on {int(base.get('images', base.get('test_images'))):,} images of the "
        f"{base['evaluation_set']} set "
        "(weights and activations of every "
        "conv/linear layer in the format; products accumulated in float32). Latency is the cost model's "
        "first-order accelerator (`conf/hardware/`: 256 float32-MAC-equivalent processing elements at iso-area, "
        "a narrower multiplier fits more of them; one LPDDR4 channel), never this CPU's time.",
        table(columns, rows),
        *([f"![uniform formats]({ctx.link(figure)})"] if plotted else []),
        f"Narrowest uniform format within {limit:g} point of float32: **{narrowest}** ({bits} bits), "
        f"{uniform_speedup:.2f}x modeled speedup and "
        f"{base['energy_uj'] / narrow_row['energy_uj']:.2f}x less energy.",
    ]
    per_group = _per_group(ctx, limit, uniform_speedup, narrowest)
    if len(per_group) > 1:
        per_group.append(_minifloats_and_integers(uniform, base, limit))
    return "\n\n".join(parts + per_group)


STAGE = Stage(NAME, "Paper 3: number formats, uniform and per layer group", compute, render, held_out_table="uniform")
