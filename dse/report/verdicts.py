"""The verdict table: one row per quantitative claim of the four papers, the paper's number beside dse's.

Each claim reads only stored stages. A row says reproduced, refuted or not comparable, with the reason in one
line; a claim whose stage is not stored, or was stored before the held-out protocol (no per-image correctness
in its table), says so instead of quoting a number that no longer meets the report's rules.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from dse.report.context import NotMeasured, ReportContext
from dse.report.correctness import accuracy_cell, paired_p
from dse.report.markdown import table
from dse.report.paper2_accumulation import verdict
from dse.report.paper3_formats import narrowest_within

__all__ = ["CLAIMS", "Claim", "Finding", "Verdict", "verdict_table", "verdicts"]

REPRODUCED, REFUTED, NOT_COMPARABLE, PENDING = "reproduced", "refuted", "not comparable", "not measured yet"


@dataclass(frozen=True)
class Verdict:
    paper: str
    claim: str
    theirs: str  # the paper's number and setting
    ours: str  # dse's number, interval and setting
    verdict: str
    why: str


@dataclass(frozen=True)
class Finding:
    """What a claim's check found: dse's number and setting, the verdict and why."""

    ours: str
    verdict: str
    why: str


@dataclass(frozen=True)
class Claim:
    """One quantitative claim of a paper, and the check that reads the stored stages for it."""

    paper: str
    claim: str
    theirs: str  # the paper's number and setting
    measure: Callable[[ReportContext], Finding]


def _mean_time_ratio(ctx: ReportContext, d: str) -> float:
    timing = ctx.table("uniform_decimals", "timing").astype({"decimals": str})
    exact = timing[timing["decimals"] == "exact"].set_index("repeat")["seconds"]
    mine = timing[timing["decimals"] == d].set_index("repeat")["seconds"]
    return statistics.median(mine / exact)


# -- paper 1 -------------------------------------------------------------------------------------------
def _p1_baseline(ctx: ReportContext) -> Finding:
    acc = ctx.held_out_table("uniform_decimals", "accuracy").astype({"decimals": str}).set_index("decimals")
    return Finding(
        f"{accuracy_cell(acc.loc['exact'])} (MobileNetV2 for 32x32 trained from scratch, "
        f"{int(acc.loc['exact', 'images']):,} held-out images)",
        NOT_COMPARABLE,
        "a different network and training; the same ballpark, the reference every other row is paired with",
    )


def _p1_d4_accuracy(ctx: ReportContext) -> Finding:
    acc = ctx.held_out_table("uniform_decimals", "accuracy").astype({"decimals": str}).set_index("decimals")
    d4, exact = acc.loc["4"], acc.loc["exact"]
    delta, p = 100 * (d4["top1"] - exact["top1"]), paired_p(d4, exact)
    same = p >= 0.05 and abs(delta) < 0.5
    return Finding(
        f"{accuracy_cell(d4)}, {delta:+.2f} points (McNemar p {p:.2g})",
        REPRODUCED if same else REFUTED,
        "no held-out image changes significantly" if same else "d = 4 differs significantly from the exact model",
    )


def _p1_d4_time(ctx: ReportContext) -> Finding:
    ctx.held_out_table("uniform_decimals", "accuracy")
    ratio = _mean_time_ratio(ctx, "4")
    faster = ratio < 0.9
    return Finding(
        f"{ratio:.3f}x the unrounded model's time (median of interleaved repeats, this CPU)",
        REPRODUCED if faster else REFUTED,
        "rounded float32 weights are still float32: the same instructions on the same operands"
        if not faster
        else "faster here: see section 1 for whether it trends with d",
    )


def _p1_types(ctx: ReportContext) -> Finding:
    single = ctx.held_out_table("decimals_by_group", "single").astype({"value": str})
    exact = single[single["unit"] == "exact"].iloc[0]
    rest = single[single["unit"] != "exact"].astype({"value": int})
    collapse = rest[rest["value"] == rest["value"].min()]
    broken = list(collapse.loc[collapse["accuracy_drop_points"] > 10, "unit"])
    recovered = rest[rest["value"] >= 3].groupby("unit")["accuracy_drop_points"].max()
    worst_by_d = rest.groupby("value")["accuracy_drop_points"].max()
    from_d = next((int(d) for d in worst_by_d.index if (worst_by_d.loc[worst_by_d.index >= d] <= 1.0).all()), None)
    ok = bool(broken) and (recovered <= 1.0).all()
    return Finding(
        f"d = 1 breaks {', '.join(broken) or 'no type'}; every type within 1 point from d = {from_d} "
        f"(at d >= 3 the worst drop is {recovered.max():.2f} points; {int(exact['images']):,} held-out images)",
        REPRODUCED if ok else REFUTED,
        f"the same shape{', recovering already at d = 2' if from_d == 2 else ''}"
        if ok
        else "the curve does not collapse at d = 1 and recover by d = 3",
    )


def _p1_combined(ctx: ReportContext) -> Finding:
    combined = ctx.held_out_table("decimals_by_group", "combined")
    widest = combined[combined["unit"].str.count(r"\+") == combined["unit"].str.count(r"\+").max()]
    by_d = widest.set_index("value")["accuracy_drop_points"]
    ok = by_d.loc[by_d.index >= 3].max() <= 1.0 if (by_d.index >= 3).any() else False
    return Finding(
        "all four types together: drop "
        + ", ".join(f"{v:.2f} at d = {int(d)}" for d, v in by_d.sort_index().items())
        + " points",
        REPRODUCED if ok else REFUTED,
        "within 1 point from d = 3 with every type rounded"
        if ok
        else "combined types lose more than 1 point at d >= 3",
    )


# -- paper 2 -------------------------------------------------------------------------------------------
def _p2_mitchell(ctx: ReportContext) -> Finding:
    rows = ctx.held_out_table("mitchell", "accuracy").set_index("variant")
    mitch, fp32 = rows.loc["mitchell_w6_s8"], rows.loc["fp32"]
    top5 = 100 * (mitch["top5"] - fp32["top5"])
    top1, p = 100 * (mitch["top1"] - fp32["top1"]), paired_p(mitch, fp32)
    return Finding(
        f"top-1 {accuracy_cell(mitch)}, {top1:+.2f} points (p {p:.2g}); top-5 {top5:+.2f} points "
        "(MobileNetV2, CIFAR-10)",
        REFUTED if top1 < -1 and p < 0.05 else REPRODUCED,
        "a compact network loses significantly; top-5 of 10 classes is near 100% for any model"
        if top1 < -1 and p < 0.05
        else "within a point on a compact network too",
    )


def _p2_energy(ctx: ReportContext) -> Finding:
    rows = ctx.held_out_table("mitchell", "accuracy").set_index("variant")
    mac = rows["mac_multiply_pj"] + rows["mac_add_pj"]
    saved = 100 * (1 - mac["mitchell_w6_s8"] / mac["bf16"])
    int8 = 100 * (1 - mac["exact_int8"] / mac["bf16"])
    return Finding(
        f"{saved:.0f}% (priced from the paper's own figure); exact int8 MAC {int8:.0f}% under the same model",
        NOT_COMPARABLE,
        "dse has no synthesis of its own for Mitchell: quoting the figure back is not a reproduction",
    )


def _p2_additions(ctx: ReportContext) -> Finding:
    outcome, detail = verdict(
        ctx.held_out_table("accumulation", "accumulation"), ctx.held_out_table("mitchell", "accuracy")
    )
    why = {
        "reproduced": "at the same error per product, a truncated (one-sided) sum costs more than the multiplier",
        "refuted": "at the same error per product, the multiplier costs more than a truncated sum",
    }.get(outcome, "the comparison does not separate the two")
    return Finding(detail, outcome, why)


# -- paper 3 -------------------------------------------------------------------------------------------
def _p3_speedup(ctx: ReportContext) -> Finding:
    uniform = ctx.held_out_table("formats", "uniform")
    fp32 = uniform[uniform["format"] == "fp32"].iloc[0]
    narrowest = narrowest_within(uniform, float(ctx.settings.formats.max_drop_points))
    speedup = fp32["modeled_latency_us"] / narrowest["modeled_latency_us"]
    return Finding(
        f"{speedup:.2f}x modeled ({narrowest['format']}, uniform, {accuracy_cell(narrowest)})",
        NOT_COMPARABLE,
        "a first-order iso-area accelerator model, not their hardware: the factor is a different quantity",
    )


def _p3_search(ctx: ReportContext) -> Finding:
    rows = ctx.stored_table("search_efficiency", "search_efficiency")
    by = rows.set_index("sampler")
    tpe, rand = by.loc["tpe (default)"], by.loc["random"]
    return Finding(
        f"TPE reaches 95% of the true front's hypervolume in a median of {tpe['to 95% (median)']:g} evaluations "
        f"({tpe['to 95% (min-max)']}) of 625, 99% in {tpe['to 99% (median)']:g}; random sampling "
        f"{rand['to 95% (median)']:g} and {rand['to 99% (median)']:g} ({int(tpe['seeds'])} seeds each)",
        REPRODUCED,
        "far fewer evaluations than the exhaustive grid; over random sampling TPE gains mostly on the last percent",
    )


# -- paper 4 -------------------------------------------------------------------------------------------
def _p4_depthwise(ctx: ReportContext) -> Finding:
    speed = ctx.stored_table("emulation_speed", "emulation_speed")
    return Finding(
        f"every layer incl. depthwise on {len(speed)} multipliers, "
        f"{'all bit-exact' if speed['bit_exact'].all() else 'NOT all bit-exact'}, "
        f"worst {speed['model_ratio'].max():.2f}x the exact model's time (CPU)",
        REPRODUCED,
        "the capability, on CPU; TorchApprox reports 2.0x on a GPU",
    )


def _p4_quantization(ctx: ReportContext) -> Finding:
    """Integer formats of every conv/linear layer (weights and activations), widest to narrowest."""
    uniform = ctx.held_out_table("formats", "uniform")
    fp32 = uniform[uniform["format"] == "fp32"].iloc[0]
    ints = uniform[uniform["format"].str.fullmatch(r"int\d+")].sort_values("bits", ascending=False)
    deltas = [100 * (r["top1"] - fp32["top1"]) for _, r in ints.iterrows()]
    int8 = ints[ints["format"] == "int8"].iloc[0]
    # robust: 8 bits keep the accuracy, and the loss grows as the noise does (0.5-point slack: intervals)
    graceful = all(b <= a + 0.5 for a, b in itertools.pairwise(deltas))
    ok = 100 * (fp32["top1"] - int8["top1"]) <= 1.0 and graceful
    return Finding(
        ", ".join(f"{r['format']} {d:+.2f}" for (_, r), d in zip(ints.iterrows(), deltas, strict=True))
        + f" points from float32 (int8 vs float32: McNemar p {paired_p(int8, fp32):.2g}; MobileNetV2, "
        f"{int(fp32['images']):,} held-out images)",
        REPRODUCED if ok else REFUTED,
        "8-bit noise costs under a point and the loss grows as bits shrink"
        if ok
        else "8-bit quantization already costs more than a point, or the loss does not grow with the noise",
    )


def _p4_recurrent(ctx: ReportContext) -> Finding:
    rows = ctx.held_out_table("recurrent", "recurrent")
    exact = rows[(rows["variant"] == "as_is") & (rows["multiplier"] == "fp32")].iloc[0]
    as_is = rows[(rows["variant"] == "as_is") & (rows["multiplier"] != "fp32")]
    within = (100 * (exact["top1"] - as_is["top1"]) <= 1).sum()
    rho = as_is["mre_pct"].corr(as_is["top1"], method="spearman")
    return Finding(
        f"GRU: {within} of {len(as_is)} multipliers within 1 point of {accuracy_cell(exact)} "
        f"({int(exact['images'])} held-out sequences); Spearman(MRE, accuracy) {rho:+.2f}",
        REPRODUCED if within > 0 and rho < 0 else REFUTED,
        "a GRU is robust to most circuits and degrades monotonically with their error",
    )


def _p4_retraining(ctx: ReportContext) -> Finding:
    rows = ctx.held_out_table("retraining", "retraining")
    retrained = rows[rows["variant"] == "retrained"]
    if retrained.empty:
        raise NotMeasured("no assignment retrained yet")
    first = rows[rows["variant"] == "as_is"].set_index("assignment")
    exact = first.loc["fp32", "top1"]
    bn = rows[rows["variant"] == "batchnorm_reestimated"].set_index("assignment")["top1"]
    specs = ctx.settings.retraining.assignments
    parts, multipliers_ok = [], []
    for name, g in retrained.groupby("assignment", sort=False):
        after = g["top1"].mean()
        extra = 100 * (after - bn[name]) if name in bn else float("nan")
        gap = 100 * (after - exact)
        parts.append(
            f"{name} {100 * first.loc[name, 'top1']:.1f} -> {100 * after:.1f}% ({gap:+.1f} from exact; "
            f"{extra:+.1f} beyond batch-norm re-estimation)"
        )
        if name in specs and "multiplier" in specs[name].knobs:  # the paper's claim is about multipliers
            multipliers_ok.append(gap > -1 and extra > 1)
    ok = bool(multipliers_ok) and all(multipliers_ok)
    return Finding(
        f"mean of {retrained['seed'].nunique()} seeds, one epoch: " + "; ".join(parts),
        REPRODUCED if ok else REFUTED,
        "each approximate multiplier ends within a point of exact, and retraining adds more than re-estimating "
        "batch norm; exact int8 without retraining is still as accurate"
        if ok
        else "an approximate multiplier stays more than a point below exact, or batch-norm re-estimation "
        "recovers as much",
    )


CLAIMS: list[Claim] = [
    Claim(
        "1", "baseline accuracy", "86.91% (Keras MobileNetV2, ImageNet-pretrained, 10,000 test images)", _p1_baseline
    ),
    Claim("1", "d = 4 keeps the accuracy", "86.95%, +0.04 points", _p1_d4_accuracy),
    Claim("1", "fewer decimals take less time (d = 4)", "69.04 s vs 87.72 s: 0.79x", _p1_d4_time),
    Claim("1", "experiments 2 and 4: one layer type at a time", "collapse at d = 1, recovery by d = 3-4", _p1_types),
    Claim("1", "experiment 3: layer types combined", "combined types tolerate the same d as alone", _p1_combined),
    Claim(
        "2",
        "Mitch-w6 without retraining",
        "top-5 error within 0.2 points of FP32 (ResNet, Inception-v4, ImageNet)",
        _p2_mitchell,
    ),
    Claim("2", "a Mitch-w6 MAC saves up to 80% vs bfloat16", "up to 80% (their synthesis)", _p2_energy),
    Claim("2", "multiplications may be approximated, additions must stay exact", "argued, not measured", _p2_additions),
    Claim(
        "3",
        "7.6x speedup with < 1% loss (narrow formats)",
        "7.6x on average (their accelerator, GoogLeNet/VGG, ImageNet)",
        _p3_speedup,
    ),
    Claim(
        "3",
        "a search finds the precision configuration far faster than trying every one",
        "faster than exhaustive evaluation (their heuristic)",
        _p3_search,
    ),
    Claim("4", "depthwise layers emulated (MobileNet)", "supported, GPU-accelerated", _p4_depthwise),
    Claim(
        "4",
        "robustness to quantization noise",
        "analysed: quantized networks keep their accuracy; the loss grows with the noise",
        _p4_quantization,
    ),
    Claim(
        "4",
        "recurrent layers tolerate approximation; accuracy degrades with approximation level",
        "keyword-spotting RNNs: savings with negligible loss",
        _p4_recurrent,
    ),
    Claim(
        "4",
        "approximate retraining recovers accuracy",
        "negligible loss after retraining (MobileNet, ImageNet)",
        _p4_retraining,
    ),
]


def verdicts(ctx: ReportContext) -> list[Verdict]:
    """Every claim's verdict from the stored stages (a pending row where a stage is missing or stale)."""
    out = []
    for claim in CLAIMS:
        try:
            found = claim.measure(ctx)
        except NotMeasured as why:
            found = Finding("-", PENDING, str(why))
        except FileNotFoundError as missing:  # a stage marked complete without one of its files
            found = Finding("-", PENDING, f"{missing.args[0]} is missing; recompute its stage")
        except KeyError as missing:  # a stage computed with settings that leave out the row this claim reads
            found = Finding("-", PENDING, f"the stored stage has no {missing.args[0]!r} row (its settings left it out)")
        out.append(Verdict(claim.paper, claim.claim, claim.theirs, found.ours, found.verdict, found.why))
    return out


def verdict_table(ctx: ReportContext) -> str:
    """The Markdown table that opens the report."""
    rows = [[v.paper, v.claim, v.theirs, v.ours, f"**{v.verdict}**", v.why] for v in verdicts(ctx)]
    return table(["paper", "claim", "the paper", "dse (held-out images, 95% interval)", "verdict", "why"], rows)
