"""The study's one-page summary (``README.md`` on the parent run): what a person wants first."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import optuna
import pandas as pd

from dse.objectives import Objective
from dse.tracking.pareto import baseline_rows

__all__ = ["energy_budget_table", "interval_text", "study_summary"]

BUDGET_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)  # of the exact baseline's energy


def energy_budget_table(all_trials: pd.DataFrame, baseline_energy: float) -> pd.DataFrame:
    """Best feasible top-1 accuracy whose estimated energy fits each budget (a fraction of the baseline's)."""
    feasible = all_trials[all_trials["feasible"]] if "feasible" in all_trials else all_trials
    rows = []
    for fraction in BUDGET_FRACTIONS:
        budget = fraction * baseline_energy
        fits = feasible[feasible["energy_uj"] <= budget]
        best = fits.loc[fits["accuracy"].idxmax()] if not fits.empty else None
        rows.append(
            {
                "energy budget": f"{fraction:.0%} ({budget:.4g} uJ)",
                "best top-1 (search set)": _with_interval(best) if best is not None else "none fits",
                "trial": int(best["trial"]) if best is not None else "",
                "its energy (uJ)": f"{best['energy_uj']:.4g}" if best is not None else "",
            }
        )
    return pd.DataFrame(rows)


def study_summary(
    study: optuna.Study, objectives: Sequence[Objective], all_trials: pd.DataFrame, front: pd.DataFrame
) -> str:
    """Markdown: trials by state, the front, the baseline, and the best accuracy at each energy budget."""
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    budget = study.user_attrs.get("n_trials")
    lines = [
        f"# Study `{study.study_name}`",
        "",
        f"- objectives: {', '.join(f'{o.name} ({o.direction})' for o in objectives)}",
        f"- trials: {', '.join(f'{n} {s}' for s, n in sorted(states.items()))}"
        + (f" (budget: {budget} COMPLETE)" if budget else ""),
        f"- Pareto front: {len(front)} trials (`pareto/pareto_front.csv`, plots in `pareto/`; "
        "filter the runs with `tags.pareto = 'true'`)",
    ]
    base = baseline_rows(all_trials)
    if not base.empty and "energy_uj" in all_trials and "accuracy" in all_trials:
        b = base.iloc[0]
        lines.append(f"- exact baseline (trial {int(b['trial'])}): top-1 {_with_interval(b)}, {b['energy_uj']:.4g} uJ")
        if np.isfinite(b["energy_uj"]):
            lines += [
                "",
                "## Best accuracy at each energy budget",
                "",
                _markdown(energy_budget_table(all_trials, b["energy_uj"])),
            ]
    return "\n".join(lines) + "\n"


def _with_interval(row: pd.Series) -> str:
    """``87.38% [86.6, 88.1] of 2000 images``: an accuracy with its 95% interval and image count, when known."""
    interval = interval_text(*(row.get(k, float("nan")) for k in ("accuracy_low", "accuracy_high", "n_images")))
    return f"{100 * row['accuracy']:.2f}%" + (f" {interval} images" if interval else "")


def interval_text(low: float, high: float, n_images: float) -> str:
    """``[86.6, 88.1] of 2000``: an accuracy's 95% interval in percent and the images behind it ("" when unknown)."""
    if any(v is None or math.isnan(v) for v in (low, high, n_images)):
        return ""
    return f"[{100 * low:.1f}, {100 * high:.1f}] of {int(n_images)}"


def _markdown(table: pd.DataFrame) -> str:
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])
