"""Tracking a study: what is recorded (:mod:`.tracker`), where (:mod:`.mlflow_tracker`, the one module
that imports MLflow), and the front's tables and views (:mod:`.pareto`, :mod:`.heatmap`, :mod:`.summary`).

Import the modules themselves: this package re-exports nothing, so reading a front never imports MLflow.
"""
