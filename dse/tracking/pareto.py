"""Pareto fronts of a study: table, hypervolume, and plots a person can read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:  # dse.study imports the tracker; objectives are only annotations here
    from dse.study.objectives import Objective


__all__ = [
    "front_table",
    "hypervolume",
    "normalized_points",
    "plot_front_html",
    "plot_front_png",
    "plot_retrained_front_png",
    "trials_table",
]


def _row(trial: FrozenTrial, objectives: Sequence[Objective]) -> dict[str, object]:
    row: dict[str, object] = {"trial": trial.number}
    row.update({o.name: v for o, v in zip(objectives, trial.values or [], strict=False)})
    row.update({k: v for k, v in trial.user_attrs.items() if k not in row})
    row.update({f"param.{k}": v for k, v in trial.params.items()})
    return row


def trials_table(study: optuna.Study, objectives: Sequence[Objective]) -> pd.DataFrame:
    """One row per COMPLETE trial: objectives, other metrics, parameters."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return pd.DataFrame([_row(t, objectives) for t in trials])


def front_table(study: optuna.Study, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The rows of ``study.best_trials`` (feasible, non-dominated), sorted by the first objective."""
    df = pd.DataFrame([_row(t, objectives) for t in study.best_trials])
    if df.empty:
        return df
    return df.sort_values(objectives[0].name, ascending=objectives[0].direction == "minimize").reset_index(drop=True)


def normalized_points(values: np.ndarray, objectives: Sequence[Objective], reference: Sequence[float]) -> np.ndarray:
    """Map objective values to minimisation with the reference point at 1 in every axis.

    A maximised objective with reference r_i becomes 1 - (v - r_i)/|r_i| if r_i != 0 else 1 - v;
    a minimised one becomes v / r_i.
    """
    out = np.empty_like(values, dtype=float)
    for i, (o, r) in enumerate(zip(objectives, reference, strict=False)):
        if o.direction == "minimize":
            out[:, i] = values[:, i] / r
        else:
            out[:, i] = 1.0 - (values[:, i] - r) / (abs(r) if r else 1.0)
    return out


def hypervolume(points: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Volume dominated by ``points`` (minimisation) and bounded by ``reference`` (default all ones).

    Exact, by slicing along the first axis (fine for the fronts of a few hundred points).

    >>> hypervolume(np.array([[0.5, 0.5]])), hypervolume(np.array([[0.2, 0.6], [0.6, 0.2]]))
    (0.25, 0.48)
    """
    pts = np.asarray(points, dtype=float)
    ref = np.ones(pts.shape[1]) if reference is None else np.asarray(reference, dtype=float)
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    pts = pts[np.argsort(pts[:, 0])]
    volume = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, 0] if i + 1 < len(pts) else ref[0]
        width = upper - pts[i, 0]
        if width > 0:
            volume += width * hypervolume(pts[: i + 1, 1:], ref[1:])
    return float(round(volume, 12))


def plot_front_png(all_trials: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[Objective], path: Path) -> Path:
    """Scatter of every pair of objectives: all trials in grey, the front in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [o.name for o in objectives]
    pairs = [(names[0], n) for n in names[1:]] or [(names[0], names[0])]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.5), squeeze=False)
    for ax, (y, x) in zip(axes[0], pairs, strict=False):
        ax.scatter(all_trials[x], all_trials[y], s=14, c="0.75", label="trials")
        if not front.empty:
            f = front.sort_values(x)
            ax.plot(f[x], f[y], "o-", c="tab:red", ms=5, lw=1, label="Pareto front")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"{len(all_trials)} trials, {len(front)} on the front")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_retrained_front_png(table: pd.DataFrame, path: Path) -> Path:
    """Accuracy (%) vs energy (uJ) of retrained trials: an arrow from before to after retraining
    for each, and the non-dominated staircase before (grey) and after (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for col, colour, label in (("accuracy", "0.55", "before retraining"), ("accuracy_retrained", "tab:red", "after")):
        ax.scatter(table["energy_uj"], 100 * table[col], s=18, c=colour, label=label, zorder=3)
        best = table.sort_values(["energy_uj", col], ascending=[True, False])
        stairs = best[best[col] >= best[col].cummax()]  # non-dominated in (energy, this accuracy)
        ax.step(stairs["energy_uj"], 100 * stairs[col], where="post", c=colour, lw=1, alpha=0.8)
    baseline = table["baseline"].astype(bool) if "baseline" in table else pd.Series(False, index=table.index)
    if baseline.any():
        b = table[baseline].iloc[0]
        ax.scatter([b["energy_uj"]], [100 * b["accuracy"]], s=140, marker="*", c="gold", ec="k", zorder=4)
        ax.annotate(
            "exact baseline",
            (b["energy_uj"], 100 * b["accuracy"]),
            textcoords="offset points",
            xytext=(-10, -14),
            ha="right",
            fontsize=8,
        )
    for _, r in table[~baseline].iterrows():
        ax.annotate(
            "",
            xy=(r["energy_uj"], 100 * r["accuracy_retrained"]),
            xytext=(r["energy_uj"], 100 * r["accuracy"]),
            arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 0.8},
        )
    ax.set_xlabel("estimated energy per inference (uJ)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{len(table)} trials before and after approximate retraining")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_front_html(all_trials: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[Objective], path: Path) -> Path:
    """Interactive plotly scatter (self-contained HTML, opens offline); hover shows the assignment."""
    import plotly.graph_objects as go

    names = [o.name for o in objectives]
    x, y = (names[1], names[0]) if len(names) > 1 else (names[0], names[0])
    params = [c for c in all_trials.columns if c.startswith("param.")]

    def hover(df: pd.DataFrame) -> list[str]:
        return [
            f"trial {int(r['trial'])}<br>" + "<br>".join(f"{c[6:]}={r[c]}" for c in params) for _, r in df.iterrows()
        ]

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=all_trials[x],
            y=all_trials[y],
            mode="markers",
            name="trials",
            marker={"color": "lightgrey", "size": 7},
            text=hover(all_trials),
            hoverinfo="text+x+y",
        )
    )
    if not front.empty:
        f = front.sort_values(x)
        color = f[names[2]] if len(names) > 2 else None
        fig.add_trace(
            go.Scatter(
                x=f[x],
                y=f[y],
                mode="markers+lines",
                name="Pareto front",
                text=hover(f),
                hoverinfo="text+x+y",
                marker={
                    "size": 10,
                    "color": color,
                    "colorscale": "Viridis",
                    "showscale": color is not None,
                    "colorbar": {"title": names[2]} if color is not None else None,
                },
            )
        )
    fig.update_layout(xaxis_title=x, yaxis_title=y, title=f"Pareto front ({len(front)} of {len(all_trials)} trials)")
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path
