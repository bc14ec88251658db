"""Paper 2's "multiplications can be approximated while additions must stay exact", tested.

The same multiplier on every conv/linear layer, its products summed exactly or by an accumulator without its
``t`` lowest bits (``<multiplier>_acct<t>``: :mod:`dse.multipliers._truncated_accumulation`), bit-exact on the
held-out images. Each row is paired with the same multiplier's exact accumulation (McNemar), and beside it the
per-product error the truncation adds, so a reader sees whether additions are more fragile than
multiplications at a comparable error.
"""

from __future__ import annotations

import pandas as pd

from dse.multipliers import get_multiplier
from dse.report.context import ReportContext
from dse.report.correctness import accuracy_cell, difference_cell
from dse.report.figures import accuracy_bars
from dse.report.markdown import table
from dse.report.paper4_retraining import assignment_of
from dse.report.stage import Stage

__all__ = ["STAGE"]

NAME = "accumulation"


def compute(ctx: ReportContext) -> None:
    s = ctx.settings.accumulation
    log = ctx.rows(NAME, "accumulation", ["multiplier", "truncated_bits"])
    for base in s.multipliers:
        for t in [0, *s.truncated_bits]:
            if log.has(multiplier=base, truncated_bits=t):
                continue
            name = str(base) if t == 0 else f"{base}_acct{t}"
            stats = get_multiplier(name).error_stats()
            exact = get_multiplier(str(base)).error_stats()  # the multiplier's own
            log.add(
                {
                    "multiplier": str(base),
                    "truncated_bits": int(t),
                    "circuit": name,
                    "product_mre_pct": stats.mre_pct,
                    "product_mean_error": stats.bias,
                    "base_product_mre_pct": exact.mre_pct,
                    # the truncation alone (on exact products): the error the accumulator adds
                    "truncation_mre_pct": get_multiplier(f"exact_s8_acct{t}").error_stats().mre_pct if t else 0.0,
                    **ctx.measure(assignment_of(ctx, None, {"multiplier": name})),
                }
            )


def verdict(rows: pd.DataFrame, points_allowed: float = 1.0) -> tuple[str, str]:
    """(reproduced / refuted, one line) for each multiplier: the most accumulator bits dropped within
    ``points_allowed`` of its exact accumulation, and whether that truncation's own per-product error is smaller
    than the multiplier's (additions more fragile: reproduced) or not (refuted)."""
    lines, fragile = [], []
    for base, g in rows.groupby("multiplier", sort=False):
        exact = g[g["truncated_bits"] == 0].iloc[0]
        if exact["base_product_mre_pct"] == 0:
            continue  # an exact multiplier has no error to compare the accumulator's with
        truncated = g[g["truncated_bits"] > 0].set_index("truncated_bits").sort_index()
        held = truncated[100 * (exact["top1"] - truncated["top1"]) <= points_allowed]
        if held.empty:  # already the fewest bits dropped cost more than allowed
            t = int(truncated.index[0])
            added = float(truncated.loc[t, "truncation_mre_pct"])
            fragile.append(added < exact["base_product_mre_pct"])
            lines.append(
                f"{base} (its products {exact['base_product_mre_pct']:.1f}% off on average) loses more than "
                f"{points_allowed:g} point against exact accumulation already with {t} accumulator bits dropped, a "
                f"truncation that alone puts products {added:.2f}% off"
            )
            continue
        t = int(held.index.max())
        added = float(held.loc[t, "truncation_mre_pct"])
        fragile.append(added < exact["base_product_mre_pct"])
        lines.append(
            f"{base} (its products {exact['base_product_mre_pct']:.1f}% off on average) keeps within "
            f"{points_allowed:g} point of exact accumulation up to {t} dropped bits, a truncation that alone puts "
            f"products {added:.2f}% off"
        )
    if not lines:
        return "not measured", "no approximate multiplier in report.accumulation.multipliers"
    outcome = "reproduced" if all(fragile) else "refuted" if not any(fragile) else "mixed"
    return outcome, "; ".join(lines)


_COLUMNS = ["multiplier", "accumulation", "product MRE", "mean product error", "top-1 [95% interval]"]
_COLUMNS += ["vs exact accumulation (points, p)"]


def render(ctx: ReportContext) -> str:
    rows = ctx.table(NAME, "accumulation")
    lines = []
    for base, g in rows.groupby("multiplier", sort=False):
        exact = g[g["truncated_bits"] == 0].iloc[0]
        for _, r in g.iterrows():
            lines.append(
                [
                    base,
                    "exact" if r["truncated_bits"] == 0 else f"{int(r['truncated_bits'])} low bits dropped",
                    f"{r['product_mre_pct']:.2f}%",
                    f"{r['product_mean_error']:+.1f}",
                    accuracy_cell(r),
                    "reference" if r["truncated_bits"] == 0 else difference_cell(r, exact),
                ]
            )
    outcome, why = verdict(rows)
    n = int(rows["images"].iloc[0])
    figure = ctx.figure("paper2_accumulation.png")
    labels = [
        f"{m}, {'exact' if t == 0 else f'{t} bits dropped'}"
        for m, t in zip(rows["multiplier"], rows["truncated_bits"], strict=True)
    ]
    accuracy_bars(rows, labels, None, figure, "Exact against truncated accumulation, same multiplier")
    return "\n\n".join(
        [
            "Every conv/linear layer on the named 8-bit multiplier; its products summed exactly (int32) or by an "
            "accumulator without its t lowest bits, i.e. each product rounded down to a multiple of 2^t before an "
            f"exact sum. Bit-exact on the {n:,} held-out test images, no retraining; each truncated row paired with "
            "the same multiplier's exact accumulation (McNemar). The product error columns are over every operand "
            "pair (8-bit signed): the multiplier's own error plus the truncation's.",
            table(_COLUMNS, lines),
            f"![exact against truncated accumulation]({ctx.link(figure)})",
            f"**Verdict: {outcome}.** {why}. The truncation's error is one-sided (always down), so it adds up "
            "over a dot product of hundreds of terms instead of averaging out; a multiplier's error, one-sided "
            "too for Mitchell, is relative to each product and scaled away by the next layer's normalisation.",
        ]
    )


STAGE = Stage(NAME, "Paper 2: may additions be approximated too?", compute, render)
