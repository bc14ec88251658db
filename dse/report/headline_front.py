"""The headline front: multipliers and decimal places per layer group together, at the study's full budget.

The committed ``mobilenet_cifar10_mixed`` study; its front re-evaluated on the full test set. The section
gives the best test accuracy within each energy budget and what every front point assigns to each group.
"""

from __future__ import annotations

import pandas as pd

from dse.report.context import ReportContext
from dse.report.markdown import pct, points, table
from dse.report.stage import Stage
from dse.report.studies import run_study, study_trials

__all__ = ["STAGE"]

NAME = "headline_front"


def compute(ctx: ReportContext) -> None:
    s = ctx.settings.headline_front
    study = run_study(ctx, str(s.study), list(s.study_overrides))
    study_trials(study).to_csv(ctx.stage_dir(NAME) / "trials.csv", index=False)
    exact = ctx.test_set.evaluate({}, timing=False).metrics  # the reference, on the front or not
    ctx.update_meta(NAME, exact_test_top1=exact["accuracy"], test_images=ctx.test_set.evaluator.n_images)
    ctx.update_meta(
        NAME,
        run_ids={
            "study": f"{study.study_name} in {ctx.work_dir / (study.study_name + '.db')}",
            "study_parent_run": study.user_attrs.get("mlflow_parent_run_id"),
        },
    )


def _plot(trials: pd.DataFrame, front: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.3))
    ax.scatter(trials["energy_uj"], 100 * trials["accuracy"], s=12, alpha=0.4, label="every trial (search set)")
    f = front.sort_values("energy_uj")
    ax.step(f["energy_uj"], 100 * f["accuracy"], where="post", marker="o", label="front (search set)")
    if "final_accuracy" in f:
        ax.plot(f["energy_uj"], 100 * f["final_accuracy"], "s", label="front (full test set)")
    ax.set_xscale("log")
    ax.set_xlabel("modeled energy per inference (uJ, log)")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(max(0, 100 * front["accuracy"].min() - 10), None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Multipliers + decimal places per layer group")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(ctx: ReportContext) -> str:
    s = ctx.settings.headline_front
    trials = ctx.table(NAME, "trials")
    base = trials[trials["trial"] == 0].iloc[0]  # the all-exact baseline, always trial 0
    front = trials[trials["on_front"]].sort_values("energy_uj").reset_index(drop=True)
    figure = ctx.figure("headline_front.png")
    _plot(trials, front, str(figure))
    meta = ctx.meta(NAME)
    test_base = float(meta["exact_test_top1"])
    budgets: list[list[object]] = []
    for fraction in s.energy_budgets:
        budget = f"{100 * fraction:g}% ({fraction * base['energy_uj']:.0f} uJ)"
        fits = front[front["energy_uj"] <= fraction * base["energy_uj"]]
        if fits.empty:
            budgets.append([budget, "-", "no front point fits", "", ""])
            continue
        best = fits.sort_values(["final_accuracy", "accuracy"], ascending=False).iloc[0]
        budgets.append(
            [
                budget,
                int(best["trial"]),
                pct(best["final_accuracy"]),
                points(best["final_accuracy"] - test_base),
                f"{best['energy_uj']:.1f}",
            ]
        )
    params = [c.removeprefix("param.").split(".", 1) for c in front.columns if c.startswith("param.")]
    knobs = list(dict.fromkeys(k for k, _ in params))  # parameters are named <knob>.<group>
    groups = list(dict.fromkeys(g for _, g in params))

    def choice(row: pd.Series, group: str) -> str:
        values = [str(row.get(f"param.{k}.{group}")) for k in knobs if pd.notna(row.get(f"param.{k}.{group}"))]
        return " / ".join(values) or "exact"

    assignment_rows = [
        [int(r["trial"]), pct(r["final_accuracy"]), f"{r['energy_uj']:.0f}", *[choice(r, g) for g in groups]]
        for _, r in front.iterrows()
    ]
    n_images = int(meta["test_images"])
    return "\n\n".join(
        [
            f"Study `{s.study}` (`conf/study/{s.study}.yaml`): every layer group takes an approximate multiplier "
            f"or float32, and a number of decimal places for its weights; {len(trials)} trials on the 2,000-image "
            f"search set (trials losing more than 5 points are infeasible), the {len(front)} front points "
            f"re-evaluated on {n_images:,} test images. The exact model: {pct(test_base)} at "
            f"{base['energy_uj']:.0f} uJ.",
            "**Best test accuracy within each energy budget** (of the exact model's energy):",
            table(["energy budget", "trial", "top-1 (test set)", "vs exact (points)", "energy (uJ)"], budgets),
            f"![headline front]({ctx.link(figure)})",
            f"**What each front point assigns** (per group: {' / '.join(knobs)}; the groups' layers are "
            f"`model.layer_groups` of `conf/model/`):",
            table(["trial", "top-1 (test)", "energy (uJ)", *groups], assignment_rows),
        ]
    )


STAGE = Stage(NAME, "The headline front: multipliers and decimal places together", compute, render)
