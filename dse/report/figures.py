"""Figures several sections share: accuracies with their intervals, as bars a reader compares at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dse.report.correctness import interval_from_counts

__all__ = ["accuracy_bars"]


def accuracy_bars(rows: pd.DataFrame, labels: Sequence[str], reference: float | None, path: Path, title: str) -> None:
    """Horizontal bars of ``rows.top1`` (one per label, in order) with 95% intervals, the full 0-100% range,
    and a dashed line at the ``reference`` accuracy (the exact model), if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bounds = [interval_from_counts(float(r["top1"]), int(r["images"])) for _, r in rows.iterrows()]
    top1 = 100 * rows["top1"].to_numpy()
    low = top1 - [100 * b[0] for b in bounds]
    high = [100 * b[1] for b in bounds] - top1
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.32 * len(labels)))
    ax.barh(list(labels), top1, xerr=[low, high], capsize=2, color="tab:blue", alpha=0.8)
    if reference is not None:
        ax.axvline(100 * reference, color="black", ls="--", lw=1, label="exact model")
        ax.legend(fontsize=8, loc="lower left")
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"top-1 on the {int(rows['images'].iloc[0]):,} held-out images (%), 95% intervals")
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
