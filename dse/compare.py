"""``python -m dse.compare studies=[a,b,...]``: the fronts of several studies in one plot and one table.

Every study is judged on the same two metrics (``compare.y``, maximised, against ``compare.x``,
minimised; by default top-1 accuracy against estimated energy), whatever it optimised: each
trial records both. Each study's front on those two metrics is recomputed from its feasible
COMPLETE trials, and its hypervolume is measured against one reference point shared by all
(``y`` = 0, ``x`` = 1.1 x the largest exact-baseline cost among the studies), so the numbers
compare. Results go to ``compare.output_dir`` and to an MLflow run of their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import optuna
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.trial import TrialState

from dse.assignment import BASELINE_KEY
from dse.cli import run_command, writable_run_dir
from dse.config_building import build_tracker
from dse.config_paths import CONFIG_DIR
from dse.exceptions import ConfigError
from dse.objectives import Objective
from dse.study.create import load_studies
from dse.study.final_evaluation import held_out_result
from dse.study.storage import describe_storage
from dse.tracking.pareto import axis_label, axis_scale, hypervolume, is_feasible, normalized_points, staircase

__all__ = ["Comparison", "compare_studies", "run_compare"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Comparison:
    summary: pd.DataFrame  # one row a study: trials, front size, hypervolume, best y, cheapest x
    points: pd.DataFrame  # every feasible COMPLETE trial: study, trial, x, y, on_front, baseline
    reference: tuple[float, float]  # (y, x) of the shared hypervolume reference point
    run_id: str | None = None


def _trials(study: optuna.Study, x: str, y: str) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not is_feasible(t):
            continue  # never on a front
        if x not in t.user_attrs or y not in t.user_attrs:
            raise ConfigError(f"Study {study.study_name!r}: trial {t.number} has no {x!r} or {y!r} recorded.")
        row = {
            "study": study.study_name,
            "trial": t.number,
            x: float(t.user_attrs[x]),
            y: float(t.user_attrs[y]),
            "baseline": t.user_attrs.get("assignment_key") == BASELINE_KEY,
        }
        if y == "accuracy":  # how sure, and on which images: the search set's interval, the held-out result
            row.update({k: t.user_attrs.get(k, np.nan) for k in _SEARCH_INTERVAL})
            held_out = held_out_result(study, t.number)
            row.update({k: held_out.get(k, np.nan) for k in _HELD_OUT})
        rows.append(row)
    extra = [*_SEARCH_INTERVAL, *_HELD_OUT] if y == "accuracy" else []
    return pd.DataFrame(rows, columns=["study", "trial", x, y, "baseline", *extra])


_SEARCH_INTERVAL = ("accuracy_low", "accuracy_high", "n_images")
_HELD_OUT = ("final_accuracy", "final_accuracy_low", "final_accuracy_high", "final_n_images")


def compare_studies(studies: dict[str, optuna.Study], x: str = "energy_uj", y: str = "accuracy") -> Comparison:
    """The fronts of ``studies`` on (maximise ``y``, minimise ``x``) and their hypervolumes on a shared reference."""
    tables = [_trials(s, x, y) for s in studies.values()]
    points = pd.concat(tables, ignore_index=True)
    if points.empty:
        raise ConfigError(f"None of the studies {list(studies)} has a feasible COMPLETE trial to compare.")
    base = points[points["baseline"]]
    worst = float(base[x].max()) if not base.empty else float(points[x].max())
    reference = (0.0, 1.1 * worst)
    objectives = [Objective(y, "maximize"), Objective(x, "minimize")]
    points["on_front"] = False
    rows = []
    for name, table in zip(studies, tables, strict=True):
        front = staircase(table, x, y)
        points.loc[(points["study"] == name) & points["trial"].isin(front["trial"]), "on_front"] = True
        hv = (
            hypervolume(normalized_points(front[[y, x]].to_numpy(), objectives, list(reference))) if len(front) else 0.0
        )
        rows.append(
            {
                "study": name,
                "feasible_trials": len(table),
                "front_size": len(front),
                "hypervolume": hv,
                f"best_{y}": float(table[y].max()) if len(table) else np.nan,
                **_best_interval(table, y),
                f"lowest_{x}": float(table[x].min()) if len(table) else np.nan,
            }
        )
    return Comparison(pd.DataFrame(rows), points, reference)


def _best_interval(table: pd.DataFrame, y: str) -> dict[str, float]:
    """The best trial's 95% interval and image count (accuracy only; empty when not recorded)."""
    if y != "accuracy" or not len(table) or "n_images" not in table:
        return {}
    best = table.loc[table[y].idxmax()]
    return {
        "best_accuracy_low": best["accuracy_low"],
        "best_accuracy_high": best["accuracy_high"],
        "n_images": best["n_images"],
    }


def plot_comparison(comparison: Comparison, x: str, y: str, path: Path) -> Path:
    """Each study's front (staircase and points, one colour a study), the trials behind it faint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    sx, sy = axis_scale(x), axis_scale(y)
    for i, row in comparison.summary.iterrows():
        colour = f"C{i}"
        pts = comparison.points[comparison.points["study"] == row["study"]]
        front = staircase(pts, x, y)
        ax.scatter(pts[x] * sx, pts[y] * sy, s=10, c=colour, alpha=0.25)
        ax.step(front[x] * sx, front[y] * sy, where="post", c=colour, lw=1.2)
        ax.scatter(front[x] * sx, front[y] * sy, s=28, c=colour, label=f"{row['study']} (HV {row['hypervolume']:.3f})")
    base = comparison.points[comparison.points["baseline"]]
    if not base.empty:
        ax.scatter(base[x] * sx, base[y] * sy, s=150, marker="*", c="gold", ec="k", zorder=4, label="exact baseline")
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Pareto fronts compared (hypervolume against one shared reference point)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_compare(cfg: DictConfig) -> Comparison:
    """Load the named studies from the configured storage, compare them, write and log the result."""
    names = [str(n) for n in cfg.studies]
    if len(names) < 1:
        raise ConfigError("Name the studies to compare: studies=[a,b] (study names in the storage).")
    studies = load_studies(instantiate(cfg.storage), names, describe_storage(cfg.storage.url))
    x, y = str(cfg.compare.x), str(cfg.compare.y)
    comparison = compare_studies(studies, x, y)
    out = Path(cfg.compare.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "compare_summary.csv", out / "compare_points.csv", out / "compare_fronts.png"]
    comparison.summary.to_csv(files[0], index=False)
    comparison.points.to_csv(files[1], index=False)
    plot_comparison(comparison, x, y, files[2])
    _logger.info(
        "Fronts on %s vs %s (reference %s=%g, %s=%g):\n%s",
        y,
        x,
        y,
        comparison.reference[0],
        x,
        comparison.reference[1],
        comparison.summary.to_string(index=False),
    )
    tracker = build_tracker(cfg)
    run_id = tracker.log_standalone_run(
        f"compare-{'-vs-'.join(names)}",
        {"dse_role": "compare", "dse_studies": ",".join(names)},
        {"studies": ",".join(names), "x": x, "y": y, "reference": str(comparison.reference)},
        files,
    )
    tracker.log_metrics(run_id, {f"hypervolume_{r.study}": r.hypervolume for r in comparison.summary.itertuples()})
    tracker.replace_table(run_id, comparison.summary, "compare_summary_table.json")
    _logger.info("Files in %s%s", out.resolve(), f"; MLflow run {run_id}" if run_id else "")
    return Comparison(comparison.summary, comparison.points, comparison.reference, run_id or None)


@writable_run_dir
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="compare")
def main(cfg: DictConfig) -> None:
    run_command(run_compare, cfg)


if __name__ == "__main__":
    main()
