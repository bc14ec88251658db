"""Sections made of dse's own benchmarks (``benchmarks/``), run as their commands; their output files are stored.

``search_efficiency``: ``benchmarks/search_efficiency.py`` on the 625-point grid and on the per-layer
multiplier space (evaluations cached under ``report.search_efficiency.cache``: a re-run replays them).
``emulation_speed``: ``benchmarks/emulation_speed.py`` for every shipped multiplier and family.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dse.exceptions import ConfigError, DSEError
from dse.report.context import ReportContext
from dse.report.markdown import table
from dse.report.stage import Stage

__all__ = ["EMULATION_SPEED", "SEARCH_EFFICIENCY"]

_logger = logging.getLogger(__name__)


def _benchmark(name: str) -> Path:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / name
    if not script.is_file():
        raise ConfigError(
            f"{script} is missing: the benchmark stages run from a checkout of dse (git clone), "
            "not from an installed wheel."
        )
    return script


def _run(script: str, args: Sequence[str], output: Path) -> None:
    """``python benchmarks/<script> <args>``; its printed output is kept in ``output`` (a stored file)."""
    command = [sys.executable, str(_benchmark(script)), *args]
    _logger.info("Running %s", " ".join(command[1:]))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DSEError(f"{script} stopped with exit code {done.returncode}:\n{done.stderr[-3000:]}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(done.stdout)


# -- search efficiency -------------------------------------------------------------------------------
def compute_search(ctx: ReportContext) -> None:
    s = ctx.settings.search_efficiency
    out = ctx.stage_dir("search_efficiency")
    cache = Path(s.cache)
    if not (out / "search_efficiency.csv").is_file():
        _run(
            "search_efficiency.py",
            ["--out", str(out), "--cache", str(cache / "search_efficiency.sqlite"), *s.args],
            out / "grid_output.txt",
        )
    if s.per_layer and not (out / "per_layer.csv").is_file():
        _run(
            "search_efficiency.py",
            ["--per-layer", "--out", str(out), "--cache", str(cache / "search_efficiency.sqlite"), *s.args],
            out / "per_layer_output.txt",
        )
    for png in out.glob("*.png"):  # figures belong beside the document's others
        shutil.move(str(png), ctx.figure(f"search_efficiency_{png.stem}.png".replace("_search_efficiency", "")))


def _range_table(df: pd.DataFrame, prefix: str) -> tuple[list[str], list[list[object]]]:
    medians = [c for c in df.columns if c.endswith("(median)")]
    headers = ["sampler", "seeds", *[c.replace(" (median)", "") for c in medians]]
    rows = [
        [
            r["sampler"],
            int(r["seeds"]),
            *[f"{prefix}{r[c]:g} ({r[c.replace('(median)', '(min-max)')]})" for c in medians],
        ]
        for _, r in df.iterrows()
    ]
    return headers, rows


def render_search(ctx: ReportContext) -> str:
    grid = ctx.table("search_efficiency", "search_efficiency")
    points_ = ctx.table("search_efficiency", "grid")
    headers, rows = _range_table(grid, "")
    default = grid.iloc[0]
    parts = [
        f"`benchmarks/search_efficiency.py`. **Ground truth**: decimal places of paper 1's four layer types in "
        f"{{1, 2, 3, 4, exact}}: all {len(points_)} assignments evaluated on a fixed 1,000-image subset "
        f"(true front: {int(points_['on_true_front'].sum())} points). Each sampler runs as dse runs it (baseline "
        "first, repeats pruned and not counted); evaluations needed to reach 90/95/99% of the true front's "
        "hypervolume, median (min-max) over seeds:",
        table(headers, rows),
        f"The default sampler ({default['sampler']}) reaches 95% in a median of **{default['to 95% (median)']:g} "
        f"evaluations** of {len(points_)}.",
        f"![search efficiency on the grid]({ctx.link(ctx.figure('search_efficiency.png'))})",
    ]
    store = ctx.stage_dir("search_efficiency")
    if (store / "screening.csv").is_file():
        sc = ctx.table("search_efficiency", "screening").iloc[0]
        parts.append(
            f"**Screening** (stop a trial after {int(sc['first_images'])} of {int(sc['images'])} images when an "
            f"optimistic bound leaves it dominated; alpha {sc['alpha']:g}; {int(sc['seeds'])} seeds): images "
            f"evaluated to reach 95%, median {sc['images_to_95_plain']:.0f} -> {sc['images_to_95_screened']:.0f} "
            f"({sc['images_to_95_plain'] / sc['images_to_95_screened']:.2f}x fewer); over the whole budget of "
            f"{int(sc['budget'])} evaluations {sc['budget_images_plain']:.0f} -> {sc['budget_images_screened']:.0f} "
            f"({sc['budget_images_plain'] / sc['budget_images_screened']:.2f}x); {int(sc['true_front_pruned'])} "
            f"true-front points stopped. The ceiling of any rule that stops dominated trials (an oracle that "
            f"knows each final accuracy and stops for free): {sc['images_to_95_oracle']:.0f} images, "
            f"{sc['images_to_95_plain'] / sc['images_to_95_oracle']:.2f}x."
        )
    if (store / "per_layer.csv").is_file():
        per_layer = ctx.table("search_efficiency", "per_layer")
        front = ctx.table("search_efficiency", "per_layer_front")
        headers, rows = _range_table(per_layer, "")
        parts += [
            "**Per-layer space** (each of the 53 conv/linear layers on mul8s_1KV9, mul8s_1L2J, mitchell_w6_s8 or "
            f"float32: 4^53 assignments; 500 images): hypervolume in % of the best front known ({len(front)} "
            "points: a 300-evaluation reference run joined with every compared run), at fixed budgets:",
            table(headers, rows),
            f"![search efficiency per layer]({ctx.link(ctx.figure('search_efficiency_per_layer.png'))})",
        ]
    else:
        parts.append(
            "**Per-layer space** (4^53 assignments): not measured in the stored run "
            "(`report.search_efficiency.per_layer=true`; about 80 min on 2 cores, then cached)."
        )
    return "\n\n".join(parts)


SEARCH_EFFICIENCY = Stage(
    "search_efficiency",
    "Search efficiency: evaluations to find the front",
    compute_search,
    render_search,
    reads_test_set=False,
)


# -- emulation speed ---------------------------------------------------------------------------------
def compute_emulation(ctx: ReportContext) -> None:
    out = ctx.stage_dir("emulation_speed")
    _run(
        "emulation_speed.py",
        ["--out", str(out / "emulation_speed.csv"), *ctx.settings.emulation_speed.args],
        out / "emulation_speed_output.txt",
    )


def render_emulation(ctx: ReportContext) -> str:
    s = ctx.settings.emulation_speed
    rows = ctx.table("emulation_speed", "emulation_speed")
    lines = [
        [
            r["table"],
            r["paths"],
            f"{r['model_ratio']:.2f}x ({r['model_ratio_min']:.2f}-{r['model_ratio_max']:.2f})",
            f"{r['pointwise_ratio']:.1f}x",
            f"{r['depthwise_ratio']:.1f}x",
            "yes" if r["bit_exact"] else "**no**",
        ]
        for _, r in rows.iterrows()
    ]
    first = rows.iloc[0]
    worst = rows.loc[rows["model_ratio"].idxmax()]
    figure = ctx.figure("emulation_speed.png")
    _plot_speed(rows, figure)
    return "\n\n".join(
        [
            f"`benchmarks/emulation_speed.py`: MobileNetV2-for-CIFAR, a batch of {int(first['batch'])} random "
            f"images, every conv/linear layer on one 8x8 multiplier through the fast path dse picks "
            f"(`emulation.path=auto`), against the exact float32 model in its fastest memory layout; "
            f"{int(first['repeats'])} interleaved repeats: ratio of the medians and (min-max) of the per-repeat "
            f"ratios, {int(first['threads'])} threads; bit-exactness checked against the reference path. "
            f"Exact model: {first['exact_ms']:.0f} ms per batch.",
            table(
                [
                    "multiplier",
                    "paths (pointwise/depthwise/other)",
                    "whole model vs exact",
                    "pointwise",
                    "depthwise",
                    "bit-exact",
                ],
                lines,
            ),
            f"Worst: {worst['table']} at **{worst['model_ratio']:.2f}x** the exact model's time; median over "
            f"{len(rows)} multipliers {rows['model_ratio'].median():.2f}x.",
            f"![emulation time of every multiplier]({ctx.link(figure)})",
            f"**Anchors.** {_measured_anchors(ctx)}Reported by the tools themselves, not measured here: {s.anchors}",
        ]
    )


def _plot_speed(rows: pd.DataFrame, path: Path) -> None:
    """Each multiplier's whole-model time as a multiple of the exact model's, with the repeats' range, by path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows.sort_values("model_ratio")
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.22 * len(rows)))
    colors = {"separable": "tab:green", "kernel": "tab:blue"}
    kind = [str(p).split("/")[0] for p in rows["paths"]]
    err = [rows["model_ratio"] - rows["model_ratio_min"], rows["model_ratio_max"] - rows["model_ratio"]]
    ax.barh(rows["table"], rows["model_ratio"], xerr=err, capsize=2, color=[colors.get(k, "tab:grey") for k in kind])
    for name, color in colors.items():
        ax.barh([], [], color=color, label=f"{name} path")
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xlabel("whole-model time / exact float32 model's (median, range over repeats)")
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _measured_anchors(ctx: ReportContext) -> str:
    """The one-lookup-per-product paths timed by the same run (absent from runs before they were measured)."""
    if not (ctx.stage_dir("emulation_speed") / "emulation_speed_lookup.csv").is_file():
        return ""
    rows = ctx.table("emulation_speed", "emulation_speed_lookup").set_index("path")
    first = rows.iloc[0]
    measured = " and ".join(
        f"**{r['model_ratio']:.0f}x** ({r['model_ratio_min']:.0f}-{r['model_ratio_max']:.0f}) with {r['how']} "
        f"(dse's `{path}` path)"
        for path, r in rows.iterrows()
    )
    return (
        f"Measured in the same run, on the same model ({first['table']}, a batch of {int(first['batch'])}, "
        f"{int(first['repeats'])} interleaved repeats; exact model {first['exact_ms']:.0f} ms per batch): one "
        f"table lookup per product without a compiled kernel, the scheme of lookup-table emulators, costs "
        f"{measured} the exact model's time. "
    )


EMULATION_SPEED = Stage(
    "emulation_speed",
    "Emulation speed of every multiplier",
    compute_emulation,
    render_emulation,
    reads_test_set=False,  # timed on random images: the time does not depend on the pixels
)
