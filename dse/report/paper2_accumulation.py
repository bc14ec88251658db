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
from dse.report.context import NotMeasured, ReportContext
from dse.report.correctness import accuracy_cell, difference_cell, paired_p
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


def verdict(rows: pd.DataFrame, multipliers: pd.DataFrame | None, alpha: float = 0.05) -> tuple[str, str]:
    """(reproduced / refuted / not distinguishable, one line): at the same per-product error, does truncating the
    accumulator of exact products cost more accuracy than an approximate multiplier with exact accumulation?

    ``rows``: this stage's table; ``multipliers``: the Mitchell stage's held-out table (its ``variant`` names a
    multiplier, its ``exact_int8`` row the reference). Each truncation of ``exact_s8`` is matched with the
    multiplier whose mean relative error per product is closest (within 25%); the two are compared on the same
    images (McNemar)."""
    exact = rows[(rows["multiplier"] == "exact_s8") & (rows["truncated_bits"] == 0)]
    if exact.empty or multipliers is None:
        return "not measured", "needs exact_s8 in report.accumulation.multipliers and the Mitchell stage stored"
    mults = multipliers[multipliers["variant"].str.startswith(("mitchell_", "mul8"))].copy()
    stats = [get_multiplier(str(v)).error_stats() for v in mults["variant"]]
    mults["mre"], mults["bias"] = [e.mre_pct for e in stats], [e.bias for e in stats]
    int8 = multipliers[multipliers["variant"] == "exact_int8"].iloc[0]
    found = []
    for _, r in rows[(rows["multiplier"] == "exact_s8") & (rows["truncated_bits"] > 0)].iterrows():
        mre = float(r["truncation_mre_pct"])
        close = mults[(mults["mre"] - mre).abs() <= 0.25 * mre]
        if close.empty:
            continue
        m = close.loc[(close["mre"] - mre).abs().idxmin()]
        lost_sum = 100 * (exact["top1"].iloc[0] - r["top1"])
        lost_mul = 100 * (int8["top1"] - m["top1"])
        p = paired_p(r, m)
        outcome = "neither" if p >= alpha else ("sum" if r["top1"] < m["top1"] else "multiplier")
        found.append(
            (
                outcome,
                f"{int(r['truncated_bits'])} accumulator bits dropped ({mre:.2f}% per product, always down) cost "
                f"{lost_sum:.1f} points; {m['variant']} ({m['mre']:.2f}%, mean error {m['bias']:+.1f}) with exact sums "
                f"{lost_mul:.1f} "
                f"(the two on the same images: McNemar p {p:.2g})",
            )
        )
    if not found:
        return "not measured", "no truncation has a multiplier of comparable per-product error to compare with"
    outcomes = {o for o, _ in found}
    result = (
        "reproduced"
        if outcomes == {"sum"}
        else "refuted"
        if outcomes == {"multiplier"}
        else "not distinguishable"
        if outcomes == {"neither"}
        else "mixed"
    )
    return result, "; ".join(text for _, text in found)


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
    try:
        multipliers: pd.DataFrame | None = ctx.held_out_table("mitchell", "accuracy")
    except NotMeasured:
        multipliers = None
    outcome, why = verdict(rows, multipliers)
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
            "**At the same error per product, which costs more?** Each truncation of exact products is set beside "
            "the multiplier of section 3 whose mean relative error per product is closest (within 25%), each "
            "against its own exact reference (exact accumulation; exact int8).",
            f"**Verdict: {outcome}.** {why}. A truncated sum's error is one-sided, so it adds up over a dot "
            "product of hundreds of terms instead of averaging out; an unbiased multiplier's errors partly cancel.",
        ]
    )


STAGE = Stage(NAME, "Paper 2: may additions be approximated too?", compute, render, held_out_table=NAME)
