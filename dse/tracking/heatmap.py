"""Which layers tolerate approximation across the front: searched knob x Pareto trial, sorted by energy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_front_heatmap"]


def _encode(values: pd.Series) -> np.ndarray:
    """Colour position in [0, 1] per cell: numbers by value ('exact' beyond the largest), else by
    category in the order they first appear (one row is one knob of one layer or group)."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().any():
        top = float(numeric.max())
        filled = numeric.fillna(top + 1)  # 'exact' (or missing) reads as the most precise
        lo, hi = float(filled.min()), float(filled.max())
        return ((filled - lo) / (hi - lo)).to_numpy() if hi > lo else np.full(len(values), 1.0)
    categories = list(dict.fromkeys(values.astype(str)))
    if "exact" in categories:  # exact always at the top of the scale
        categories.remove("exact")
        categories.append("exact")
    idx = np.array([categories.index(str(v)) for v in values], dtype=float)
    return idx / max(len(categories) - 1, 1)


def plot_front_heatmap(front: pd.DataFrame, path: Path, energy: str = "energy_uj") -> Path | None:
    """Heatmap of what each Pareto trial (columns, by increasing energy) gives each searched knob
    (rows: the ``param.*`` columns of :func:`dse.tracking.pareto.front_table`); cells say the value.
    None when the front has no parameters (nothing to show)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = [c for c in front.columns if c.startswith("param.")]
    if front.empty or not params:
        return None
    f = front.sort_values(energy) if energy in front else front
    grid = np.vstack([_encode(f[p]) for p in params])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.75 * len(f) + 3), max(2.5, 0.32 * len(params) + 1.8)))
    ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for i, p in enumerate(params):
        for j, v in enumerate(f[p]):
            ax.text(
                j,
                i,
                str(v).replace("mitchell_", "mitch_"),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if grid[i, j] < 0.6 else "black",
            )
    ax.set_yticks(range(len(params)), [p.removeprefix("param.") for p in params], fontsize=7)
    labels = [f"#{int(t)}\n{e:.3g}" for t, e in zip(f["trial"], f[energy], strict=False)] if energy in f else None
    ax.set_xticks(range(len(f)), labels or [str(t) for t in f["trial"]], fontsize=7)
    ax.set_xlabel("Pareto trial (number, estimated energy in uJ), cheapest first")
    ax.set_title(
        "What the front assigns (colour per row: fewer decimals / other choices darker, exact brightest)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
