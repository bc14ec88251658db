"""Paper 1 (decimal places of the weights): every targeted layer at one d, then one layer type at a time.

Experiment 1 (``uniform_decimals``): every conv/linear layer rounded to d = 1..9 decimal places, and
unrounded: top-1 on the full test set, modeled energy and weight bits, and the measured inference time
(every model timed once per repeat in a shuffled order, so drift hits every d alike).
Experiments 2-4 (``decimals_by_group``): only one layer type at a time takes d (the rest exact), then
two or more types together, on the search set.
"""

from __future__ import annotations

import itertools
import statistics

import numpy as np
import pandas as pd

from dse.report.context import ReportContext, RowLog
from dse.report.markdown import pct, points, table
from dse.report.paper4_retraining import assignment_of
from dse.report.stage import Stage
from dse.sensitivity import plot_sensitivity

__all__ = ["GROUPS", "UNIFORM"]

EXACT = "exact"


def _decimals(value: object) -> int | None:
    return None if str(value) == EXACT else int(str(value))


# -- experiment 1 ---------------------------------------------------------------------------------
def compute_uniform(ctx: ReportContext) -> None:
    s = ctx.settings.uniform_decimals
    values = [*[int(d) for d in s.decimals], EXACT]
    log = ctx.rows("uniform_decimals", "accuracy", ["decimals"])
    test = ctx.test_set
    assignments = {str(d): ({} if d == EXACT else assignment_of(ctx, None, {"decimals": _decimals(d)})) for d in values}
    for d, assignment in assignments.items():
        if not log.has(decimals=d):
            m = test.evaluate(assignment, timing=False).metrics
            log.add(
                {
                    "decimals": d,
                    "top1": m["accuracy"],
                    "top5": m["accuracy_top5"],
                    "energy_uj": m["energy_uj"],
                    "mean_weight_bits": m["mean_weight_bits"],
                    "test_images": test.evaluator.n_images,
                }
            )
    timing = ctx.stage_dir("uniform_decimals") / "timing.csv"
    if not timing.is_file():  # one block: its repeats are only comparable within one run
        search = ctx.search_set
        models = {d: search.candidate(a) for d, a in assignments.items()}
        times = search.evaluator.interleaved_times(models, int(s.timing_repeats), seed=int(s.timing_seed))
        rows = [
            {
                "decimals": d,
                "repeat": i,
                "seconds": t,
                "images": search.evaluator.n_images,
                "threads": search.evaluator.timing_threads,
            }
            for d, ts in times.items()
            for i, t in enumerate(ts)
        ]
        pd.DataFrame(rows).to_csv(timing, index=False)


def _time_summary(timing: pd.DataFrame) -> pd.DataFrame:
    """Per d: median, min and max seconds, and the median over repeats of the ratio to the exact model's pass."""
    exact = timing[timing["decimals"] == EXACT].set_index("repeat")["seconds"]
    rows = []
    for d, group in timing.groupby("decimals", sort=False):
        ratios = group.set_index("repeat")["seconds"] / exact
        rows.append(
            {
                "decimals": str(d),
                "median_s": group["seconds"].median(),
                "min_s": group["seconds"].min(),
                "max_s": group["seconds"].max(),
                "ratio": statistics.median(ratios),
                "ratio_min": ratios.min(),
                "ratio_max": ratios.max(),
            }
        )
    return pd.DataFrame(rows)


def _plot_uniform(acc: pd.DataFrame, times: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(acc["decimals"].astype(str))
    x = np.arange(len(labels))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(x, 100 * acc["top1"], marker="o")
    left.set_xticks(x, labels)
    left.set_xlabel("decimal places of every layer's weights")
    left.set_ylabel("top-1 on the test set (%)")
    left.grid(alpha=0.3)
    t = times.set_index("decimals").loc[labels]
    right.errorbar(
        x, t["ratio"], yerr=[t["ratio"] - t["ratio_min"], t["ratio_max"] - t["ratio"]], marker="o", capsize=3
    )
    right.axhline(1.0, color="grey", lw=0.8)
    right.set_xticks(x, labels)
    right.set_xlabel("decimal places")
    right.set_ylabel("inference time / unrounded model")
    right.set_title("median and range over repeats", fontsize=9)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _time_verdict(rounded: pd.DataFrame) -> str:
    """Whether fewer decimal places reduce the measured time: the rounded models' ratios to the unrounded one."""
    lo, hi = rounded["ratio"].min(), rounded["ratio"].max()
    trend = rounded["ratio"].corr(pd.Series(rounded.index.astype(int), index=rounded.index), method="spearman")
    first, last = rounded["ratio"].iloc[0], rounded["ratio"].iloc[-1]
    if max(abs(lo - 1), abs(hi - 1)) <= 0.05:
        return (
            "**No: fewer decimal places do not reduce inference time here.** Every rounded model's median time is "
            f"within 5% of the unrounded model's (ratios {lo:.3f} to {hi:.3f})"
        )
    if abs(trend) < 0.5:
        return (
            f"**No: fewer decimal places do not reduce inference time here.** The time ratio to the unrounded "
            f"model does not trend with d (Spearman {trend:+.2f}; d = {rounded.index[0]}: {first:.3f}, "
            f"d = {rounded.index[-1]}: {last:.3f}). The rounded models' medians lie at {lo:.3f} to {hi:.3f} of the "
            "unrounded one's; as d = 9, which moves no weight by more than 5e-10, shows the same offset as d = 1, "
            "the offset is not the decimals' doing (its cause, with the same operators on the same shapes, was "
            "not pinned down)"
        )
    return (
        f"**Time changes with d here (Spearman {trend:+.2f} between d and the time ratio; ratios {lo:.3f} to "
        f"{hi:.3f}).** Treat it with care"
    )


_UNIFORM_COLUMNS = ["d", "top-1", "vs unrounded (points)", "weight bits (modeled)", "energy (uJ)", "time (s)"]
_UNIFORM_COLUMNS += ["time / unrounded"]


def render_uniform(ctx: ReportContext) -> str:
    acc = ctx.table("uniform_decimals", "accuracy").astype({"decimals": str})
    timing = ctx.table("uniform_decimals", "timing").astype({"decimals": str})
    times = _time_summary(timing).set_index("decimals")
    base = acc[acc["decimals"] == EXACT].iloc[0]
    figure = ctx.figure("paper1_uniform_decimals.png")
    _plot_uniform(acc, times.reset_index(), str(figure))
    rows = []
    for _, r in acc.iterrows():
        t = times.loc[r["decimals"]]
        rows.append(
            [
                r["decimals"],
                pct(r["top1"]),
                points(r["top1"] - base["top1"]),
                f"{r['mean_weight_bits']:.1f}",
                f"{r['energy_uj']:.1f}",
                f"{t['median_s']:.2f} ({t['min_s']:.2f}-{t['max_s']:.2f})",
                f"{t['ratio']:.3f} ({t['ratio_min']:.3f}-{t['ratio_max']:.3f})",
            ]
        )
    repeats = int(timing["repeat"].max()) + 1
    images, threads = int(timing["images"].iloc[0]), timing["threads"].iloc[0]
    safe = acc[(acc["decimals"] != EXACT) & (base["top1"] - acc["top1"] <= 0.01)]
    fewest = min((int(d) for d in safe["decimals"]), default=None)
    verdict = _time_verdict(times.drop(index=EXACT))
    return "\n\n".join(
        [
            f"Every conv/linear layer's weights rounded to d decimal places (round half to even), activations "
            f"unchanged. Top-1 on {int(base['test_images']):,} test images; time: {repeats} repeats of one pass "
            f"over the {images:,}-image search set on {threads} thread(s), every model once per repeat in a shuffled "
            "order; median and (min-max) over repeats.",
            table(_UNIFORM_COLUMNS, rows),
            f"{verdict}. Why: rounding changes the *values* of the weights, not their type; they stay float32 "
            "tensors and every multiply-accumulate is the same float32 instruction on the same number of "
            "operands, so the CPU does identical work. A time saving needs narrower storage or arithmetic, "
            "which is what the cost model's weight bits and energy describe (hardware that stores d-decimal "
            "weights in fewer bits), not what this CPU runs. "
            + (f"Accuracy holds within 1 point of the unrounded model down to d = {fewest}." if fewest else ""),
            f"![paper 1, experiment 1]({ctx.link(figure)})",
        ]
    )


UNIFORM = Stage("uniform_decimals", "Paper 1, experiment 1: every layer at d = 1..9", compute_uniform, render_uniform)


# -- experiments 2-4 --------------------------------------------------------------------------------
def compute_groups(ctx: ReportContext) -> None:
    s = ctx.settings.decimals_by_group
    search = ctx.search_set
    single = ctx.rows("decimals_by_group", "single", ["unit", "value"])
    combined = ctx.rows("decimals_by_group", "combined", ["unit", "value"])
    base = search.evaluate({}, timing=False).metrics
    ctx.update_meta("decimals_by_group", baseline_accuracy=base["accuracy"], baseline_energy_uj=base["energy_uj"])

    def add(log: RowLog, groups: list[str], d: int) -> None:
        unit = "+".join(groups)
        if log.has(unit=unit, value=d):
            return
        assignment = assignment_of(ctx, groups, {"decimals": d})
        m = search.evaluate(assignment, timing=False).metrics
        log.add(
            {
                "knob": "decimals",
                "unit": unit,
                "layers": len(assignment),
                "value": d,
                "accuracy": m["accuracy"],
                "accuracy_drop_points": 100 * (base["accuracy"] - m["accuracy"]),
                "energy_uj": m["energy_uj"],
                "energy_saving_pct": 100 * (1 - m["energy_uj"] / base["energy_uj"]),
                "images": search.evaluator.n_images,
            }
        )

    for group in ctx.cfg.model.layer_groups:
        for d in s.decimals:
            add(single, [str(group)], int(d))
    types = [str(g) for g in s.combination_groups]
    for size in range(2, len(types) + 1):
        for combo in itertools.combinations(types, size):
            for d in s.combination_decimals:
                add(combined, list(combo), int(d))


def render_groups(ctx: ReportContext) -> str:
    single = ctx.table("decimals_by_group", "single")
    combined = ctx.table("decimals_by_group", "combined")
    meta = ctx.meta("decimals_by_group")
    figure = ctx.figure("paper1_decimals_by_group.png")
    plot_sensitivity(single, "decimals", figure)
    images = int(single["images"].iloc[0])
    safe = {
        unit: int(g.loc[g["accuracy_drop_points"] <= 1.0, "value"].min())
        if (g["accuracy_drop_points"] <= 1.0).any()
        else None
        for unit, g in single.groupby("unit", sort=False)
    }
    rows = [
        [
            unit,
            int(single.loc[single["unit"] == unit, "layers"].iloc[0]),
            *[f"{v:.1f}" for v in single.loc[single["unit"] == unit].sort_values("value")["accuracy_drop_points"]],
            d if d is not None else "none",
        ]
        for unit, d in safe.items()
    ]
    values = sorted(single["value"].unique())
    ranked = sorted(safe.items(), key=lambda kv: -(kv[1] or 99))
    by_drop = list(single[single["value"] == values[0]].sort_values("accuracy_drop_points", ascending=False)["unit"])
    drop = single.set_index(["unit", "value"])["accuracy_drop_points"]
    combo_rows = []
    for _, r in combined.iterrows():
        parts = str(r["unit"]).split("+")
        additive = sum(drop.get((p, r["value"]), np.nan) for p in parts)
        combo_rows.append(
            [
                r["unit"].replace("+", " + "),
                int(r["value"]),
                f"{r['accuracy_drop_points']:.1f}",
                f"{additive:.1f}",
                f"{r['energy_saving_pct']:.1f}",
            ]
        )
    return "\n\n".join(
        [
            f"Only the named layer type takes d decimal places; every other layer stays exact. Accuracy drop in "
            f"points against the exact model ({pct(meta['baseline_accuracy'])}) on the {images:,}-image search set.",
            table(["layer type", "layers", *[f"d={v}" for v in values], "fewest d within 1 point"], rows),
            f"![paper 1, one layer type at a time]({ctx.link(figure)})",
            f"**Sensitivity at d = {values[0]}**, most sensitive first: "
            + ", ".join(f"{u} {drop.get((u, values[0]), float('nan')):.1f}" for u in by_drop)
            + f" points. Every type stays within 1 point from d = {ranked[0][1]} on.",
            '**Two or more types together** (experiment 4). "Sum of singles" adds the drops each type causes '
            "alone: where the measured drop is larger, the errors compound (a drop cannot take accuracy below "
            "chance, 10%, so sums beyond that only say each type alone already breaks the model).",
            table(["types together", "d", "drop (points)", "sum of singles", "energy saving (%)"], combo_rows),
        ]
    )


GROUPS = Stage(
    "decimals_by_group",
    "Paper 1, experiments 2-4: one layer type at a time, then together",
    compute_groups,
    render_groups,
)
