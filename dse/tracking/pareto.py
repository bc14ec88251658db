"""Pareto fronts of a study: table, hypervolume, and plots a person can read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from dse.assignment import BASELINE_KEY
from dse.objectives import Objective
from dse.optuna_internals import is_feasible, wfg_hypervolume
from dse.search_spaces.space import EXACT

__all__ = [
    "axis_label",
    "axis_scale",
    "baseline_rows",
    "front_table",
    "hypervolume",
    "is_feasible",
    "non_dominated",
    "normalized_points",
    "plot_front_html",
    "plot_front_png",
    "plot_retrained_front_png",
    "projections",
    "reference_kind",
    "staircase",
    "trials_table",
    "zoomed_cost_range",
    "zoomed_range",
]


def non_dominated(better: np.ndarray, cheaper: np.ndarray) -> np.ndarray:
    """Whether each point is non-dominated for (maximise ``better``, minimise ``cheaper``); equal points
    do not dominate each other."""
    b, c = np.asarray(better, dtype=float), np.asarray(cheaper, dtype=float)
    weakly = (b[None, :] >= b[:, None]) & (c[None, :] <= c[:, None])  # [i, j]: j at least as good as i
    strictly = (b[None, :] > b[:, None]) | (c[None, :] < c[:, None])
    return np.asarray(~(weakly & strictly).any(axis=1))


def reference_kind(trial: FrozenTrial) -> str:
    """``exact`` for the all-exact model, ``uniform`` for every parameter at one choice (those that lack it
    exact), else ``""``: the reference points every front is shown beside."""
    if trial.user_attrs.get("assignment_key") == BASELINE_KEY:
        return "exact"
    values = {v for v in trial.params.values() if v != EXACT}
    if len(values) != 1:
        return ""
    (choice,) = values
    for name, value in trial.params.items():
        if choice in getattr(trial.distributions.get(name), "choices", ()) and value != choice:
            return ""
    return "uniform"


def _row(trial: FrozenTrial, objectives: Sequence[Objective]) -> dict[str, object]:
    row: dict[str, object] = {"trial": trial.number, "feasible": is_feasible(trial), "reference": reference_kind(trial)}
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

    Optuna's own indicator (the WFG algorithm its samplers and hypervolume plots use); points
    that do not dominate the reference add nothing.

    >>> hypervolume(np.array([[0.5, 0.5]])), hypervolume(np.array([[0.2, 0.6], [0.6, 0.2]]))
    (0.25, 0.48)
    """
    pts = np.asarray(points, dtype=float)
    ref = np.ones(pts.shape[1]) if reference is None else np.asarray(reference, dtype=float)
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    return round(wfg_hypervolume(pts, ref), 12)


def front_hypervolume(
    study: optuna.Study, objectives: Sequence[Objective], reference: Sequence[float] | None
) -> float | None:
    """Hypervolume of ``study``'s current front against ``reference`` (in objective units), or None
    when there is no front or no usable reference (a minimised axis at 0)."""
    front = study.best_trials
    if reference is None or not front:
        return None
    if any(r == 0 for o, r in zip(objectives, reference, strict=False) if o.direction == "minimize"):
        return None
    values = np.array([t.values for t in front], dtype=float)
    return hypervolume(normalized_points(values, objectives, reference))


# Axis label and scale of each metric a plot may show (accuracy as %, units spelled out).
AXES: dict[str, tuple[str, float]] = {
    "accuracy": ("top-1 accuracy (%)", 100.0),
    "accuracy_top5": ("top-5 accuracy (%)", 100.0),
    "accuracy_retrained": ("top-1 accuracy after retraining (%)", 100.0),
    "energy_uj": ("energy per inference (uJ, estimated)", 1.0),
    "modeled_latency_us": ("latency per inference (us, modeled)", 1.0),
    "inference_time_s": ("time per pass over the search set (s, measured)", 1.0),
    "ms_per_image": ("measured time per image (ms)", 1.0),
    "mean_weight_bits": ("MAC-weighted mean weight width (bits)", 1.0),
}
_COSTS = ("energy_uj", "modeled_latency_us", "inference_time_s")


def axis_label(name: str) -> str:
    """How a plot labels metric ``name`` (with its unit)."""
    return AXES.get(name, (name, 1.0))[0]


def axis_scale(name: str) -> float:
    """What a plot multiplies metric ``name`` by (fractions of accuracy are shown in %)."""
    return AXES.get(name, (name, 1.0))[1]


def projections(all_trials: pd.DataFrame, objectives: Sequence[Objective]) -> list[tuple[str, str]]:
    """(x, y) pairs to draw: the accuracy objective against each cost that trials measured
    (energy, modeled latency, measured time), else against the other objectives."""
    maximized = [o.name for o in objectives if o.direction == "maximize"]
    y = maximized[0] if maximized else objectives[0].name
    costs = [c for c in _COSTS if c in all_trials and np.isfinite(all_trials[c].astype(float)).any()]
    xs = costs or [o.name for o in objectives if o.name != y] or [y]
    return [(x, y) for x in xs]


def staircase(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The rows non-dominated in (minimise ``x``, maximise ``y``), by increasing ``x``."""
    d = df[np.isfinite(df[x].astype(float)) & np.isfinite(df[y].astype(float))]
    d = d.sort_values([x, y], ascending=[True, False])
    return d[d[y] > d[y].cummax().shift(fill_value=-np.inf)]


def baseline_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The all-exact baseline's row of a :func:`trials_table` (none if the table has no keys)."""
    return df[df["assignment_key"] == BASELINE_KEY] if "assignment_key" in df else df.iloc[:0]


def zoomed_range(front: pd.DataFrame, references: pd.DataFrame, y: str) -> tuple[float, float] | None:
    """The y range (in ``y``'s units) that shows the front's differences: from its lowest point to the
    highest of the front and the exact baseline, padded; None when there is nothing to zoom on."""
    values = pd.concat([front[y], references[y]]).astype(float) if y in references else front[y].astype(float)
    values = values[np.isfinite(values)]
    if front.empty or values.empty:
        return None
    low, high = float(front[y].astype(float).min()), float(values.max())
    pad = max(0.15 * (high - low), 0.001 if axis_scale(y) == 100.0 else 1e-9)
    return low - pad, high + pad


def zoomed_cost_range(
    front: pd.DataFrame, uniform: pd.DataFrame, x: str, y: str, y_range: tuple[float, float]
) -> tuple[float, float] | None:
    """The x (cost) range of the zoomed panel: the front and the uniform settings in its accuracy range that
    compete with it (not dominated by a front point) or cost at most 25% more than its costliest point, padded.
    The exact baseline and far dominated uniform settings are left out: they often cost many times the front
    (125 uJ against 10), and on their scale the front would sit on one vertical line; the top row shows them,
    and the panel names the baseline."""
    if front.empty or x not in front:
        return None
    fx, fy = front[x].astype(float).to_numpy(), front[y].astype(float).to_numpy()
    near = 1.25 * float(np.nanmax(fx))  # a reference just past the front's costliest point is worth seeing

    def shown(cost: float, accuracy: float) -> bool:
        dominated = ((fx <= cost) & (fy >= accuracy) & ((fx < cost) | (fy > accuracy))).any()
        return cost <= near or not dominated

    kept = [r for _, r in uniform.iterrows() if x in r and shown(float(r[x]), float(r[y]))]
    rows = pd.concat([front, pd.DataFrame(kept)]) if kept else front
    ys, xs = rows[y].astype(float), rows[x].astype(float)
    xs = xs[(ys >= y_range[0]) & (ys <= y_range[1]) & np.isfinite(xs)]
    if xs.empty:
        return None
    low, high = float(xs.min()), float(xs.max())
    pad = 0.1 * (high - low) if high > low else max(0.02 * abs(high), 1e-12)  # a lone point: 2% either side
    return low - pad, high + pad


def _draw_projection(
    ax: Any,
    all_trials: pd.DataFrame,
    feasible: pd.DataFrame,
    front: pd.DataFrame,
    uniform: pd.DataFrame,
    base: pd.DataFrame,
    x: str,
    y: str,
) -> None:
    """One panel: trials, this projection's staircase, the front, the uniform settings and the baseline."""
    sx, sy = axis_scale(x), axis_scale(y)
    ax.scatter(all_trials[x] * sx, all_trials[y] * sy, s=14, c="0.75", label="trials")
    stairs = staircase(feasible, x, y)
    ax.step(stairs[x] * sx, stairs[y] * sy, where="post", c="0.35", lw=1, label="non-dominated here")
    if not front.empty:
        ax.scatter(front[x] * sx, front[y] * sy, s=30, c="tab:red", zorder=3, label="Pareto front (all objectives)")
    if not uniform.empty:
        ax.scatter(
            uniform[x] * sx,
            uniform[y] * sy,
            s=50,
            marker="D",
            facecolors="none",
            ec="tab:blue",
            zorder=4,
            label="uniform settings (every layer one choice)",
        )
    if not base.empty:
        ax.scatter(base[x] * sx, base[y] * sy, s=150, marker="*", c="gold", ec="k", zorder=4, label="exact baseline")
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.grid(alpha=0.3)


def plot_front_png(all_trials: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[Objective], path: Path) -> Path:
    """One column per projection: every trial (grey), that projection's own non-dominated staircase
    (line), the members of the full multi-objective front (red, not joined: in a projection they
    need not be a front), the uniform settings (diamonds) and the all-exact baseline (star). The top
    row shows every trial; the bottom row zooms on the front (its accuracies and costs, with the uniform
    settings that reach them), which on the full axes sits on one line; an exact baseline outside is named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = projections(all_trials, objectives)
    fig, axes = plt.subplots(2, len(pairs), figsize=(5.5 * len(pairs), 8.5), squeeze=False)
    feasible = all_trials[all_trials["feasible"]] if "feasible" in all_trials else all_trials
    base = baseline_rows(all_trials)
    uniform = all_trials[all_trials["reference"] == "uniform"] if "reference" in all_trials else all_trials.iloc[:0]
    for column, (x, y) in enumerate(pairs):
        for row in range(2):
            _draw_projection(axes[row][column], all_trials, feasible, front, uniform, base, x, y)
        axes[0][column].legend(loc="lower right", fontsize=8)
        axes[0][column].set_title("every trial", fontsize=9)
        zoom = zoomed_range(front, pd.concat([base, uniform]), y)
        if zoom is not None:
            ax, sx, sy = axes[1][column], axis_scale(x), axis_scale(y)
            ax.set_ylim(zoom[0] * sy, zoom[1] * sy)
            ax.set_title("zoomed on the front", fontsize=9)
            costs = zoomed_cost_range(front, uniform, x, y, zoom)
            if costs is not None:
                ax.set_xlim(costs[0] * sx, costs[1] * sx)
                outside = base[(base[x] < costs[0]) | (base[x] > costs[1])] if x in base else base.iloc[:0]
                for _, b in outside.iterrows():  # off the panel: named, with its numbers
                    ax.text(
                        0.02,
                        0.03,
                        f"exact baseline off this panel: x = {b[x] * sx:.4g}, y = {b[y] * sy:.4g}",
                        transform=ax.transAxes,
                        fontsize=8,
                    )
        else:
            axes[1][column].set_visible(False)
    fig.suptitle(f"{len(all_trials)} trials, {len(front)} on the front of {', '.join(o.name for o in objectives)}")
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
        stairs = staircase(table, "energy_uj", col)
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


def _hover(df: pd.DataFrame, metrics: Sequence[str], params: Sequence[str]) -> list[str]:
    """One hover text per row: the trial, its metrics and its assignment."""
    return [
        f"<b>trial {int(r['trial'])}</b><br>"
        + "<br>".join(f"{m} = {r[m]:.4g}" for m in metrics)
        + "<br>"
        + "<br>".join(f"{c[6:]} = {r[c]}" for c in params)
        for _, r in df.iterrows()
    ]


def plot_front_html(all_trials: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[Objective], path: Path) -> Path:
    """The same panels as :func:`plot_front_png`, interactive (self-contained HTML: it renders offline
    and inside the MLflow UI's artifact viewer); hover shows the trial, its metrics and assignment."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = projections(all_trials, objectives)
    params = [c for c in all_trials.columns if c.startswith("param.")]
    on_front = set(front["trial"]) if not front.empty else set()
    metrics = sorted({n for pair in pairs for n in pair})
    fig = make_subplots(rows=1, cols=len(pairs), horizontal_spacing=0.12)
    feasible = all_trials[all_trials["feasible"]] if "feasible" in all_trials else all_trials
    layers = [
        (all_trials[~all_trials["trial"].isin(on_front)], "dominated trials", {"color": "lightgrey", "size": 7}),
        (front, "Pareto front (all objectives)", {"color": "crimson", "size": 10}),
        (
            all_trials[all_trials["reference"] == "uniform"] if "reference" in all_trials else all_trials.iloc[:0],
            "uniform settings (every layer one choice)",
            {"color": "royalblue", "size": 9, "symbol": "diamond-open"},
        ),
        (
            baseline_rows(all_trials),
            "exact baseline",
            {"color": "gold", "size": 16, "symbol": "star", "line": {"width": 1}},
        ),
    ]
    for col, (x, y) in enumerate(pairs, 1):
        sx, sy, first = axis_scale(x), axis_scale(y), col == 1
        for df, name, marker in layers:
            if not df.empty:
                points = go.Scatter(
                    x=df[x] * sx,
                    y=df[y] * sy,
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=first,
                    marker=marker,
                    text=_hover(df, metrics, params),
                    hoverinfo="text",
                )
                fig.add_trace(points, row=1, col=col)
        stairs = staircase(feasible, x, y)
        line = go.Scatter(
            x=stairs[x] * sx,
            y=stairs[y] * sy,
            mode="lines",
            line={"shape": "hv", "color": "grey", "width": 1},
            name="non-dominated in this view",
            legendgroup="stairs",
            showlegend=first,
            hoverinfo="skip",
        )
        fig.add_trace(line, row=1, col=col)
        fig.update_xaxes(title_text=axis_label(x), row=1, col=col)
        fig.update_yaxes(title_text=axis_label(y), row=1, col=col)
    fig.update_layout(
        title=f"Pareto front: {len(front)} of {len(all_trials)} trials",
        autosize=True,
        legend={"orientation": "h", "y": -0.22},
        margin={"b": 110},
    )
    # fills whatever frame shows it (the MLflow artifact viewer, a browser tab); plotly.js inline: works offline
    fig.write_html(path, include_plotlyjs=True, full_html=True, default_width="100%", default_height="520px")
    return path
