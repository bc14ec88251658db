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
from dse.report.correctness import accuracy_cell, difference_cell, p_text
from dse.report.markdown import table
from dse.report.paper4_retraining import assignment_of
from dse.report.stage import Stage
from dse.sensitivity import plot_sensitivity

__all__ = ["GROUPS", "UNIFORM"]

EXACT = "exact"


def _decimals(value: object) -> int | None:
    return None if str(value) == EXACT else int(str(value))


def fewest_within(rows: pd.DataFrame, reference: float, points_allowed: float = 1.0) -> int | None:
    """The fewest decimal places from which every larger d stays within ``points_allowed`` of ``reference``."""
    fewest = None
    for _, r in rows.assign(d=rows["decimals"].astype(int)).sort_values("d", ascending=False).iterrows():
        if 100 * (reference - r["top1"]) > points_allowed:
            break
        fewest = int(r["d"])
    return fewest


# -- experiment 1 ---------------------------------------------------------------------------------
def compute_uniform(ctx: ReportContext) -> None:
    s = ctx.settings.uniform_decimals
    values = [*[int(d) for d in s.decimals], EXACT]
    log = ctx.rows("uniform_decimals", "accuracy", ["decimals"])
    assignments = {str(d): ({} if d == EXACT else assignment_of(ctx, None, {"decimals": _decimals(d)})) for d in values}
    for d, assignment in assignments.items():
        if not log.has(decimals=d):
            log.add({"decimals": d, **ctx.measure(assignment)})
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
    left.set_ylabel("top-1 on the held-out images (%)")
    left.set_ylim(0, 100)
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


_UNIFORM_COLUMNS = ["d", "top-1 [95% interval]", "vs unrounded (points, McNemar p)", "weight bits (modeled)"]
_UNIFORM_COLUMNS += ["energy (uJ)", "time (s)"]
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
                accuracy_cell(r),
                "reference" if r["decimals"] == EXACT else difference_cell(r, base),
                f"{r['mean_weight_bits']:.1f}",
                f"{r['energy_uj']:.1f}",
                f"{t['median_s']:.2f} ({t['min_s']:.2f}-{t['max_s']:.2f})",
                f"{t['ratio']:.3f} ({t['ratio_min']:.3f}-{t['ratio_max']:.3f})",
            ]
        )
    repeats = int(timing["repeat"].max()) + 1
    images, threads = int(timing["images"].iloc[0]), timing["threads"].iloc[0]
    fewest = fewest_within(acc[acc["decimals"] != EXACT], base["top1"])
    verdict = _time_verdict(times.drop(index=EXACT))
    return "\n\n".join(
        [
            f"Every conv/linear layer's weights rounded to d decimal places (round half to even), activations "
            f"unchanged. Top-1 on the {int(base['images']):,} held-out test images (which chose nothing), with its "
            "95% interval; each difference from the unrounded model is paired (McNemar's exact test on the same "
            f"images). Time: {repeats} repeats of one pass "
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


UNIFORM = Stage(
    "uniform_decimals",
    "Paper 1, experiment 1: every layer at d = 1..9",
    compute_uniform,
    render_uniform,
    held_out_table="accuracy",
)


# -- experiments 2-4 --------------------------------------------------------------------------------
def compute_groups(ctx: ReportContext) -> None:
    s = ctx.settings.decimals_by_group
    single = ctx.rows("decimals_by_group", "single", ["unit", "value"])
    combined = ctx.rows("decimals_by_group", "combined", ["unit", "value"])
    if not single.has(unit=EXACT, value=EXACT):
        single.add({"knob": "decimals", "unit": EXACT, "layers": 0, "value": EXACT, **ctx.measure({})})
    base = single.table.set_index("unit").loc[EXACT]

    def add(log: RowLog, groups: list[str], d: int) -> None:
        unit = "+".join(groups)
        if log.has(unit=unit, value=d):
            return
        assignment = assignment_of(ctx, groups, {"decimals": d})
        m = ctx.measure(assignment)
        log.add(
            {
                "knob": "decimals",
                "unit": unit,
                "layers": len(assignment),
                "value": d,
                **m,
                "accuracy": m["top1"],
                "accuracy_drop_points": 100 * (base["top1"] - m["top1"]),
                "energy_saving_pct": 100 * (1 - m["energy_uj"] / base["energy_uj"]),
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


_COMBINED_COLUMNS = ["types together", "d", "top-1 [95% interval]", "drop (points)", "McNemar p vs exact"]
_COMBINED_COLUMNS += ["sum of singles", "energy saving (%)"]


def render_groups(ctx: ReportContext) -> str:
    table_ = ctx.table("decimals_by_group", "single").astype({"value": str})
    combined = ctx.table("decimals_by_group", "combined")
    base = table_[table_["unit"] == EXACT].iloc[0]
    single = table_[table_["unit"] != EXACT].astype({"value": int})
    figure = ctx.figure("paper1_decimals_by_group.png")
    plot_sensitivity(single, "decimals", figure)
    images = int(base["images"])
    values = sorted(single["value"].unique())
    safe = {
        unit: fewest_within(g.rename(columns={"value": "decimals"}), base["top1"])
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
    by_drop = list(single[single["value"] == values[0]].sort_values("accuracy_drop_points", ascending=False)["unit"])
    drop = single.set_index(["unit", "value"])["accuracy_drop_points"]
    odd = [v for v in values if v % 2 == 1]
    odd_rows = [
        [unit, *[difference_cell(g.set_index("value").loc[v], base) for v in odd]]
        for unit, g in single.groupby("unit", sort=False)
    ]
    combo_rows = []
    for _, r in combined.iterrows():
        parts = str(r["unit"]).split("+")
        additive = sum(drop.get((p, r["value"]), np.nan) for p in parts)
        combo_rows.append(
            [
                r["unit"].replace("+", " + "),
                int(r["value"]),
                accuracy_cell(r),
                f"{r['accuracy_drop_points']:.1f}",
                p_text(r, base),
                f"{additive:.1f}",
                f"{r['energy_saving_pct']:.1f}",
            ]
        )
    worst = max(safe.values(), key=lambda d: d if d is not None else 99)
    return "\n\n".join(
        [
            "**Experiment 2: one layer type at a time.** Only the named type takes d decimal places; every other "
            f"layer stays exact. Accuracy drop in points against the exact model ({accuracy_cell(base)}) on the "
            f"{images:,} held-out test images (which chose nothing).",
            table(["layer type", "layers", *[f"d={v}" for v in values], "fewest d within 1 point"], rows),
            f"![paper 1, one layer type at a time]({ctx.link(figure)})",
            f"**Sensitivity at d = {values[0]}**, most sensitive first: "
            + ", ".join(f"{u} {drop.get((u, values[0]), float('nan')):.1f}" for u in by_drop)
            + f" points. Every type stays within 1 point from d = {worst} on.",
            "**Experiment 4: one layer type at a time, odd d** (the paper's fourth experiment, read from the same "
            "runs): points against the exact model, with McNemar's exact p on the same images.",
            table(["layer type", *[f"d={v}" for v in odd]], odd_rows),
            '**Experiment 3: two or more types together.** "Sum of singles" adds the drops each type causes '
            "alone: where the measured drop is larger, the errors compound (a drop cannot take accuracy below "
            "chance, 10%, so sums beyond that only say each type alone already breaks the model).",
            table(_COMBINED_COLUMNS, combo_rows),
        ]
    )


GROUPS = Stage(
    "decimals_by_group",
    "Paper 1, experiments 2-4: one layer type at a time, together, and at odd d",
    compute_groups,
    render_groups,
    held_out_table="single",
)
