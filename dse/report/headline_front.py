"""The headline front: multipliers and decimal places per layer group together, beside the settings it must beat.

The committed study (``report.headline_front.study``) runs as a user runs it; then its front points and the
references every front is judged against (the exact model, exact int8 on every layer, and every uniform
setting of the study's space) are measured on the held-out images, with per-image correctness, and every trial
is priced under each hardware preset (``report.hardware_presets``). The section says whether the search beats
the references under each preset, by how much (hypervolume on the held-out images), and how far the front
points' search-set accuracies overstate them (the winner's curse).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
import pandas as pd
from hydra.utils import instantiate

from dse.assignment import LayerConfig
from dse.candidates.accuracy_statistics import accuracy_interval, unpack_correct
from dse.config_building import model_layer_groups
from dse.report.context import ENERGY_SPLIT, NotMeasured, ReportContext
from dse.report.correctness import accuracy_cell, difference_cell
from dse.report.markdown import pct, table
from dse.report.paper3_formats import narrowest_within
from dse.report.paper4_retraining import assignment_of
from dse.report.stage import Stage
from dse.report.studies import run_study, study_trials
from dse.tracking.pareto import hypervolume, non_dominated, reference_kind

__all__ = ["STAGE", "hypervolume_gain"]

NAME = "headline_front"
EXACT, INT8, UNIFORM, FORMAT, FRONT = "exact", "exact_int8", "uniform", "format", "front"
_ROLE_ORDER = {EXACT: 0, INT8: 1, UNIFORM: 2, FORMAT: 3, FRONT: 4}
_REFERENCES = [  # role, colour and legend of each reference, starred in the figure
    (UNIFORM, "tab:green", "uniform settings of the space"),
    (FORMAT, "tab:purple", "narrowest uniform format within 1 point"),
    (INT8, "tab:red", "exact int8"),
    (EXACT, "black", "exact model"),
]


def compute(ctx: ReportContext) -> None:
    s = ctx.settings.headline_front
    study = run_study(ctx, str(s.study), list(s.study_overrides))
    sub = ctx.for_study(str(s.study))  # the study's model, space and hardware
    space = instantiate(sub.cfg.space).bind(sub.model, model_layer_groups(sub.cfg.model, sub.model))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    priced = pd.DataFrame([{"trial": t.number, **sub.energy_by_preset(space.assignment(t.params))} for t in complete])
    study_trials(study).merge(priced, on="trial").to_csv(ctx.stage_dir(NAME) / "trials.csv", index=False)

    log = ctx.rows(NAME, "held_out", ["label"])
    search = {t.number: t for t in complete}

    def add(label: str, role: str, assignment: Mapping[str, LayerConfig], trial: int | None) -> None:
        if log.has(label=label):
            return
        t = search.get(trial) if trial is not None else None
        log.add(
            {
                "label": label,
                "role": role,
                "trial": trial if trial is not None else -1,
                "search_top1": t.user_attrs.get("accuracy", t.values[0]) if t is not None else np.nan,
                "search_images": t.user_attrs.get("n_images", np.nan) if t is not None else np.nan,
                **sub.measure(dict(assignment)),
            }
        )

    add(EXACT, EXACT, {}, 0 if 0 in search else None)
    add(INT8, INT8, assignment_of(sub, None, {"multiplier": str(s.exact_int8)}), None)
    for t in complete:
        if reference_kind(t) == UNIFORM:
            choice = sorted({f"{name.split('.')[0]}={v}" for name, v in t.params.items() if str(v) != "exact"})
            add(f"uniform {', '.join(choice)}", UNIFORM, space.assignment(t.params), t.number)
    for t in study.best_trials:
        if reference_kind(t) == "":
            add(f"trial {t.number}", FRONT, space.assignment(t.params), t.number)
    ctx.update_meta(NAME, study=str(s.study), search_preset=str(sub.cfg.hardware.energy.name))


def hypervolume_gain(points: pd.DataFrame, energy: str, exact_energy: float, chance: float = 0.1) -> dict[str, float]:
    """Held-out hypervolume (accuracy above ``chance`` x energy saved against the exact model, both as fractions
    of their range) of the references alone, and with the front points added: what the search adds."""

    def volume(rows: pd.DataFrame) -> float:
        pts = np.column_stack([(1 - rows["top1"]) / (1 - chance), rows[energy] / exact_energy])
        return hypervolume(pts, np.array([1.0, 1.0]))

    references = points[points["role"] != FRONT]
    return {"references": volume(references), "with_front": volume(points)}


def _draw(ax: Any, points: pd.DataFrame, energy: str) -> None:
    """Front points (held out with intervals, and on the search set), the references starred, the held-out front."""
    front = points[points["role"] == FRONT].sort_values(energy)
    err = [100 * (front["top1"] - front["top1_low"]), 100 * (front["top1_high"] - front["top1"])]
    ax.errorbar(front[energy], 100 * front["top1"], yerr=err, fmt="o", capsize=3, label="front point (held out, 95%)")
    ax.scatter(
        front[energy],
        100 * front["search_top1"],
        marker="o",
        facecolors="none",
        edgecolors="grey",
        label="the same point on the search set",
    )
    for _, r in front.iterrows():
        ax.plot([r[energy]] * 2, [100 * r["search_top1"], 100 * r["top1"]], color="grey", lw=0.6)
    for role, color, name in _REFERENCES:
        ref = points[points["role"] == role]
        if not ref.empty:
            ax.scatter(ref[energy], 100 * ref["top1"], marker="*", s=140, color=color, zorder=5, label=name)
    best = points[non_dominated(points["top1"].to_numpy(), points[energy].to_numpy())].sort_values(energy)
    ax.step(best[energy], 100 * best["top1"], where="post", alpha=0.4, label="held-out front of every point")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)


def _plot(points: pd.DataFrame, presets: list[str], path: str) -> None:
    """Per preset: the full accuracy range (top), and a zoom on the front's corner (bottom, axes marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(presets), figsize=(6.2 * len(presets), 8.4), squeeze=False)
    front = points[points["role"] == FRONT]
    for column, preset in enumerate(presets):
        energy = f"{preset}:energy_uj"
        full, zoom = axes[0][column], axes[1][column]
        _draw(full, points, energy)
        full.set_ylim(0, 100)
        full.set_title(f"{preset}: the full range", fontsize=10)
        _draw(zoom, points, energy)
        focus = front if not front.empty else points[points["role"] == INT8]
        lo, hi = focus[energy].min(), focus[energy].max()
        zoom.set_xlim(lo / 1.25, hi * 1.25)
        zoom.set_ylim(100 * focus["top1_low"].min() - 1, 100 * points["top1"].max() + 1)
        zoom.set_xscale("linear")  # a narrow energy range: log ticks would crowd
        zoom.set_title(f"{preset}: zoom on the front (axes cut)", fontsize=10)
        for ax in (full, zoom):
            ax.set_xlabel(f"modeled energy per inference, {preset} (uJ, log)")
            ax.set_ylabel("top-1 on the held-out images (%)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_split(points: pd.DataFrame, presets: list[str], labels: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(presets), figsize=(6.2 * len(presets), 3.8), squeeze=False)
    rows = points.set_index("label").loc[labels]
    for ax, preset in zip(axes[0], presets, strict=True):
        bottom = np.zeros(len(rows))
        for component in ENERGY_SPLIT:
            values = rows[f"{preset}:{component}"].to_numpy()
            ax.barh(labels, values, left=bottom, label=component.removesuffix("_uj").replace("_", " "))
            bottom += values
        ax.set_xlabel(f"modeled energy per inference, {preset} (uJ)")
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _beats(points: pd.DataFrame, energy: str) -> tuple[list[str], list[str]]:
    """Front points no reference dominates on the held-out images, and those a reference dominates."""
    refs = points[points["role"] != FRONT]
    kept: list[str] = []
    beaten: list[str] = []
    for _, r in points[points["role"] == FRONT].iterrows():
        dominated = ((refs["top1"] >= r["top1"]) & (refs[energy] <= r[energy])).any()
        (beaten if dominated else kept).append(str(r["label"]))
    return kept, beaten


def _display(label: str) -> str:
    """A uniform point's label with its knob (stores written before labels named it: ``uniform 2``)."""
    bare = re.fullmatch(r"uniform (\S+)", label)
    if bare is None or "=" in label:
        return label
    return f"uniform {'decimals' if bare.group(1).isdigit() else 'multiplier'}={bare.group(1)}"


def _narrowest_format(ctx: ReportContext) -> pd.DataFrame:
    """The narrowest uniform number format within the formats stage's limit of float32, as one more reference
    (from that stage's held-out rows, on the same images; empty until it is stored under the held-out protocol)."""
    try:
        uniform = ctx.held_out_table("formats", "uniform")
    except NotMeasured:
        return pd.DataFrame()
    limit = float(ctx.settings.formats.max_drop_points)
    best = narrowest_within(uniform, limit)
    label = f"uniform format {best['format']} (narrowest within {limit:g} point of float32)"
    return uniform[uniform["format"] == best["format"]].assign(label=label, role=FORMAT)


def held_out_points(ctx: ReportContext) -> pd.DataFrame:
    """The stored front points and references (and the narrowest format), labelled, with their intervals."""
    points = pd.concat([ctx.table(NAME, "held_out"), _narrowest_format(ctx)], ignore_index=True)
    points["label"] = points["label"].map(_display)
    points = points.assign(order=points["role"].map(_ROLE_ORDER)).sort_values(["order", "energy_uj"])
    bounds = [accuracy_interval(unpack_correct(r["correct"], int(r["images"]))) for _, r in points.iterrows()]
    return points.assign(top1_low=[b.low for b in bounds], top1_high=[b.high for b in bounds])


def search_gain(ctx: ReportContext, points: pd.DataFrame) -> list[dict[str, Any]]:
    """Per hardware preset: the front points no reference dominates, those one does, and the held-out
    hypervolume the front adds to its references' (in points of the unit square)."""
    exact = points[points["role"] == EXACT].iloc[0]
    out = []
    for preset in ctx.settings.hardware_presets:
        energy = f"{preset}:energy_uj"
        if energy not in points:
            continue
        kept, beaten = _beats(points, energy)
        gain = hypervolume_gain(points, energy, float(exact[energy]))
        out.append(
            {
                "preset": str(preset),
                "kept": kept,
                "beaten": beaten,
                **gain,
                "gain_points": 100 * (gain["with_front"] - gain["references"]),
            }
        )
    return out


def render(ctx: ReportContext) -> str:
    s = ctx.settings.headline_front
    meta = ctx.meta(NAME)
    trials = ctx.table(NAME, "trials")
    points = held_out_points(ctx)
    presets = [p for p in ctx.settings.hardware_presets if f"{p}:energy_uj" in points]
    search_preset = str(meta.get("search_preset"))
    exact = points[points["role"] == EXACT].iloc[0]
    figure, split = ctx.figure("headline_front.png"), ctx.figure("headline_energy_split.png")
    _plot(points, presets, str(figure))
    front = points[points["role"] == FRONT]
    best = front.sort_values("top1", ascending=False)["label"].iloc[0] if not front.empty else None
    _plot_split(points, presets, [EXACT, INT8, *([best] if best else [])], str(split))

    rows = [
        [
            r["label"],
            pct(r["search_top1"]) if pd.notna(r["search_top1"]) else "-",
            accuracy_cell(r),
            "reference" if r["role"] == EXACT else difference_cell(r, exact),
            *[f"{r[f'{p}:energy_uj']:.1f}" for p in presets],
        ]
        for _, r in points.iterrows()
    ]
    verdicts = []
    gains = search_gain(ctx, points)
    for g in gains:
        searched = (
            " (the preset the search optimised)" if g["preset"] == search_preset else " (the same trials, re-priced)"
        )
        verdicts.append(
            f"- **{g['preset']}**{searched}: front points that no reference dominates: {len(g['kept'])} of "
            f"{len(front)}"
            + (f" ({', '.join(g['kept'])})" if g["kept"] else "")
            + (f"; dominated by a reference: {', '.join(g['beaten'])}" if g["beaten"] else "")
            + f". Held-out hypervolume of the references alone {100 * g['references']:.2f}%, with the front "
            f"{100 * g['with_front']:.2f}% (**{g['gain_points']:+.2f} points** from the search)."
        )
    largest = max((g["gain_points"] for g in gains), default=0.0)
    best_ref = points[points["role"] != FRONT].sort_values("top1", ascending=False).iloc[0]
    best_front = front.set_index("label").loc[best] if best else exact
    verdicts.append(
        f"**Verdict: the search {'adds little' if largest < 1 else 'adds'} beyond its references** (at most "
        f"{largest:+.2f} points of held-out hypervolume under any preset). The most accurate reference, "
        f"{best_ref['label']}, scores {accuracy_cell(best_ref)}"
        + (f"; the most accurate front point, {best}, {accuracy_cell(best_front)}." if best else ".")
    )
    uniform = points[points["role"] == UNIFORM]
    curse = 100 * (front["search_top1"] - front["top1"])
    uniform_curse = 100 * (uniform["search_top1"] - uniform["top1"])
    optimism = curse.mean() - uniform_curse.mean()
    curse_text = (
        f"**The winner's curse.** Search-set minus held-out accuracy: front points {curse.mean():+.2f} points on "
        f"average (range {curse.min():+.2f} to {curse.max():+.2f}); the uniform settings, which nothing selected, "
        f"{uniform_curse.mean():+.2f} (the two halves of the test set differ that much by themselves). The "
        f"selection's optimism is the difference: {optimism:+.2f} points"
        + (", within what the halves' difference explains." if abs(optimism) < 0.5 else ".")
        if not front.empty
        else "The study's front holds only reference points: the search found nothing beyond them."
    )
    shares = []
    int8 = points[points["role"] == INT8].iloc[0]
    for preset in presets:
        mac = int8[f"{preset}:multiply_uj"] + int8[f"{preset}:accumulate_uj"]
        shares.append(f"{100 * mac / int8[f'{preset}:energy_uj']:.0f}% under `{preset}`")
    n_search = int(trials["n_images"].dropna().iloc[0]) if "n_images" in trials else 2000
    return "\n\n".join(
        [
            f"Study `{s.study}` (`conf/study/{s.study}.yaml`): every layer group takes an approximate multiplier or "
            f"float32, and a number of decimal places for its weights; {len(trials)} trials scored on the "
            f"{n_search:,}-image search set under `{search_preset}`. Its {len(front)} front points and the "
            "references (the exact model, exact int8 on every layer, every uniform setting of the space, and the "
            "narrowest uniform number format within 1 point once section 5 is measured) were then "
            f"measured on the {int(exact['images']):,} held-out test images, which chose nothing; differences from "
            "the exact model are paired (McNemar). Energy is priced under each hardware preset: weights from DRAM "
            "for every image (`horowitz_45nm`), or on chip and shared by a batch of 64 (`horowitz_45nm_onchip`).",
            table(
                ["point", "search set", "held out [95% interval]", "vs exact (points, McNemar p)"]
                + [f"energy (uJ), {p}" for p in presets],
                rows,
            ),
            "**Does the search beat the references?** A front point counts only if no reference is at least as "
            "accurate on the held-out images for no more energy.",
            "\n".join(verdicts[:-1]),
            verdicts[-1],
            f"![headline front]({ctx.link(figure)})",
            curse_text,
            "**Where the energy goes** (exact model, exact int8, and the most accurate front point), by component "
            "and preset. The multiply-accumulate array is "
            + " and ".join(shares)
            + " of exact int8's energy: an approximate multiplier can save at most that share, the rest is memory.",
            f"![energy by component]({ctx.link(split)})",
        ]
    )


STAGE = Stage(
    NAME,
    "The headline front: multipliers and decimal places together, against its references",
    compute,
    render,
    held_out_table="held_out",
)
