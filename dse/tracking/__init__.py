"""Tracking a study: MLflow runs (parent per study, child per trial) and its Pareto front."""

from .mlflow_tracker import MlflowTracker
from .pareto import front_table, hypervolume, normalized_points, plot_front_html, plot_front_png, trials_table

__all__ = [
    "MlflowTracker",
    "front_table",
    "hypervolume",
    "normalized_points",
    "plot_front_html",
    "plot_front_png",
    "trials_table",
]
