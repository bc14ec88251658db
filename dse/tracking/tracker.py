"""What dse records about its work, as a contract: :class:`Tracker`, and :class:`NullTracker` for ``tracking=none``.

The study loop, retraining and the commands talk to a ``Tracker`` only; the MLflow implementation
(:class:`dse.tracking.mlflow_tracker.MlflowTracker`) is the one module that imports ``mlflow``. A run
is named by the id the tracker returned for it; :class:`NullTracker` returns ``""`` and records
nothing, so callers never ask whether tracking is on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

if TYPE_CHECKING:
    import optuna

    from dse.objectives import Objective

__all__ = ["NullTracker", "Tracker"]


class Tracker(Protocol):
    """Records of studies (a parent run per study, a child run per trial) and of standalone runs."""

    parent_run_id: str | None
    plot_every: int  # redraw the front's plots every this many complete trials

    # -- the study's parent run
    def open_parent(self, study: optuna.Study, params: Mapping[str, object]) -> str: ...
    def close_parent(self, status: str = "FINISHED") -> None: ...
    def log_front(
        self,
        study: optuna.Study,
        objectives: Sequence[Objective],
        hypervolume: float | None,
        n_complete: int,
        plots: bool,
        metrics: bool = True,
        layers: Callable[[], pd.DataFrame] | None = None,
    ) -> None: ...
    def log_parent_table(self, table: pd.DataFrame, name: str, artifact_path: str | None = None) -> None: ...
    def log_parent_file(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_parent_json(self, name: str, payload: object) -> None: ...
    def where(self) -> list[str]: ...

    # -- trial runs
    def start_trial(
        self, trial: optuna.Trial, params: Mapping[str, object], tags: Mapping[str, str] | None = None
    ) -> str: ...
    def end_trial(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        tables: Mapping[str, pd.DataFrame] | None = None,
        status: str = "FINISHED",
    ) -> None: ...
    def running_trial_runs(self) -> dict[str, int]: ...
    def close_dead_run(self, run_id: str, reason: str) -> None: ...

    # -- any run
    def start_run(self, name: str, tags: Mapping[str, str], params: Mapping[str, object]) -> str: ...
    def kill_running_runs(self, tag: str, value: str) -> list[str]: ...
    def end_run(self, run_id: str, status: str = "FINISHED") -> None: ...
    def delete_run(self, run_id: str) -> None: ...
    def set_tag(self, run_id: str, key: str, value: str) -> None: ...
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None: ...
    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None: ...
    def log_json(self, run_id: str, name: str, payload: object) -> None: ...
    def replace_table(self, run_id: str, table: pd.DataFrame, artifact_file: str) -> None: ...
    def log_standalone_run(
        self,
        name: str,
        tags: Mapping[str, str],
        params: Mapping[str, object],
        artifacts: Sequence[Path],
        artifact_path: str | None = None,
    ) -> str: ...


class NullTracker:
    """``tracking=none``: every record is dropped; every run id is ``""``."""

    parent_run_id: str | None = None
    plot_every = 1

    def open_parent(self, study: optuna.Study, params: Mapping[str, object]) -> str:
        return ""

    def close_parent(self, status: str = "FINISHED") -> None:
        pass

    def log_front(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_parent_table(self, table: pd.DataFrame, name: str, artifact_path: str | None = None) -> None:
        pass

    def log_parent_file(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_parent_json(self, name: str, payload: object) -> None:
        pass

    def where(self) -> list[str]:
        return []

    def start_trial(
        self, trial: optuna.Trial, params: Mapping[str, object], tags: Mapping[str, str] | None = None
    ) -> str:
        return ""

    def end_trial(self, run_id: str, metrics: Mapping[str, float], *args: Any, **kwargs: Any) -> None:
        pass

    def running_trial_runs(self) -> dict[str, int]:
        return {}

    def close_dead_run(self, run_id: str, reason: str) -> None:
        pass

    def start_run(self, name: str, tags: Mapping[str, str], params: Mapping[str, object]) -> str:
        return ""

    def kill_running_runs(self, tag: str, value: str) -> list[str]:
        return []

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        pass

    def delete_run(self, run_id: str) -> None:
        pass

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        pass

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        pass

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_json(self, run_id: str, name: str, payload: object) -> None:
        pass

    def replace_table(self, run_id: str, table: pd.DataFrame, artifact_file: str) -> None:
        pass

    def log_standalone_run(self, name: str, *args: Any, **kwargs: Any) -> str:
        return ""
