"""MLflow records of a study: one parent run per study, one child run per trial.

The parent run's id is kept in the study's user attributes, so every worker and
every resumed run logs under the same parent. Each trial's child run id is kept
in the trial's user attributes. The parent holds the current Pareto front
(CSV, interactive HTML, PNG) and the hypervolume history, refreshed as trials finish.
Everything goes through :class:`mlflow.MlflowClient`: no process-global active run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import mlflow
import optuna
import pandas as pd
from mlflow.entities import Metric, Param

from dse.exceptions import ConfigError
from dse.objectives import Objective
from dse.store_urls import SQLITE_PREFIX, absolute_sqlite_url, is_write_race, retry_on_race
from dse.tracking.heatmap import plot_front_heatmap
from dse.tracking.pareto import front_table, plot_front_html, plot_front_png, trials_table
from dse.tracking.summary import study_summary

__all__ = ["UI_VIEW", "MlflowTracker", "check_server"]

# MLflow 3's UI opens an experiment in its GenAI view (traces, prompts) unless told otherwise: the experiment
# is marked as model development (read by UIs that honour the tag), and dse's links ask for the run table's view.
_KIND_TAG = "mlflow.experimentKind"
_MODEL_TRAINING = {_KIND_TAG: "custom_model_development"}
UI_VIEW = "?workflowType=machine_learning"

_logger = logging.getLogger(__name__)
_PARENT_ATTR = "mlflow_parent_run_id"
_RETIRED_ROLE = "parent_of_a_lost_study"
_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


@contextlib.contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive inter-process lock beside a local SQLite store (no-op for servers)."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent first starts are then the user's to avoid
        yield
        return
    lock_path = Path(tracking_uri.removeprefix(SQLITE_PREFIX) + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_STORE_HINT = (
    "Move a damaged store file aside (a new one is created), point tracking.tracking_uri at a working store, "
    "or run without MLflow: tracking=none (the study keeps every trial)."
)
SERVER_TIMEOUT_S = 5.0


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def check_server(tracking_uri: str, timeout_s: float = SERVER_TIMEOUT_S) -> None:
    """Ask an MLflow server for ``/health`` once, within ``timeout_s``: the MLflow client would retry a refused
    connection for minutes per call. Any HTTP answer (even 401) means a server is there."""
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:  # refused, unresolvable, timed out; a malformed URL
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"No MLflow tracking server answers at {tracking_uri} ({reason}; asked {url} for {timeout_s:.0f} s). "
            "Start it (mlflow server --host 127.0.0.1 --port 5000) or set tracking.tracking_uri / MLFLOW_TRACKING_URI "
            "to where it runs; or track locally: tracking=mlflow_local, or not at all: tracking=none."
        ) from exc


def _chunks(items: list, size: int = 100) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class MlflowTracker:
    """Log a study to MLflow.

    Args:
        tracking_uri: e.g. ``sqlite:///mlruns/mlflow.db`` or ``http://host:5000``.
        experiment: MLflow experiment name.
        artifact_location: where a *new* experiment stores artifacts (local path or URI).
        plot_every: redraw the front's HTML/PNG every this many complete trials (the CSV every trial).
    """

    def __init__(
        self, tracking_uri: str, experiment: str = "dse", artifact_location: str | None = None, plot_every: int = 5
    ) -> None:
        if plot_every < 1:
            raise ConfigError(f"tracking.plot_every={plot_every!r} must be >= 1.")
        self.plot_every = plot_every
        self.experiment = experiment
        tracking_uri = absolute_sqlite_url(tracking_uri)
        self.tracking_uri = tracking_uri
        location = artifact_location
        if artifact_location and "://" not in artifact_location:
            location = Path(artifact_location).resolve().as_uri()

        self.client: mlflow.MlflowClient

        def experiment_id() -> str:
            self.client = mlflow.MlflowClient(tracking_uri)  # creates (migrates) the store's tables
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                return self.client.create_experiment(experiment, artifact_location=location, tags=_MODEL_TRAINING)
            if found.tags.get(_KIND_TAG) is None:  # a store made before dse set it
                self.client.set_experiment_tag(found.experiment_id, _KIND_TAG, _MODEL_TRAINING[_KIND_TAG])
            return found.experiment_id

        if tracking_uri.startswith(("http://", "https://")):
            check_server(tracking_uri)
        # Workers started together race to create the store's tables and the experiment:
        # migrations of one SQLite file must not run twice at once (they corrupt the schema).
        with _store_lock(tracking_uri):
            try:
                self.experiment_id = retry_on_race(experiment_id, is_write_race)
            except Exception as exc:
                raise ConfigError(
                    f"Cannot use the MLflow tracking store {tracking_uri!r}: {_first_line(exc)}. {_STORE_HINT}"
                ) from exc
        if location and tracking_uri.startswith(SQLITE_PREFIX):
            self._check_not_moved(location)
        self.parent_run_id: str | None = None
        self._pareto_tags: dict[str, bool | None] = {}  # run id -> the pareto tag last set (None: not in this store)

    def _check_not_moved(self, configured: str) -> None:
        """MLflow stores an experiment's artifact folder as an absolute path: a copied or moved store would
        write its new runs' files into the original's folder. Refuse that, saying how to keep them apart."""
        actual = self.client.get_experiment(self.experiment_id).artifact_location
        if actual == configured or not actual.startswith("file:"):
            return
        store_dir = Path(self.tracking_uri.removeprefix(SQLITE_PREFIX)).parent
        folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(actual).path))
        if folder.is_relative_to(store_dir):
            return
        raise ConfigError(
            f"The MLflow store {self.tracking_uri} keeps experiment {self.experiment!r}'s artifacts in {folder}, "
            f"outside its folder {store_dir}: the store was copied or moved, and new runs would write into that "
            f"folder. Track into a new experiment, whose artifacts stay beside this store: "
            f"tracking.experiment={self.experiment}-{store_dir.parent.name or 'copy'}; or use the original store."
        )

    # -- parent run -------------------------------------------------------------------
    def open_parent(self, study: optuna.Study, params: Mapping[str, object]) -> str:
        """Create the study's parent run, or re-open the one recorded in the study."""
        run_id = study.user_attrs.get(_PARENT_ATTR)
        if run_id is not None and self._experiment_of(run_id) not in (None, self.experiment_id):
            # the study was tracked into another experiment (or a copied store's original): its parent here, if any
            run_id = self._earliest_parent(study.study_name)
        elif run_id is None:  # a new study, or workers starting it together: join a parent created moments ago
            run_id = self._earliest_parent(study.study_name)
            if run_id is not None and self._has_trial_runs(run_id):
                # trial runs under it, yet this study never recorded it: the study that made it is gone (a lost,
                # emptied or replaced database). Its runs stay; it leaves the lookups, and this study starts anew.
                self.client.set_tag(run_id, "dse_role", _RETIRED_ROLE)
                _logger.warning(
                    "MLflow parent run %s of a study named %r holds trial runs this study does not know (its "
                    "Optuna database was lost or replaced); it is kept, tagged dse_role=%s, and this study "
                    "gets a new parent run.",
                    run_id,
                    study.study_name,
                    _RETIRED_ROLE,
                )
                run_id = None
        if run_id is not None:
            try:
                self.client.update_run(run_id, status="RUNNING")
                _logger.info("Re-opened MLflow parent run %s", run_id)
            except mlflow.exceptions.MlflowException:
                _logger.warning("MLflow parent run %s is gone from %s; creating a new one", run_id, self.tracking_uri)
                run_id = None
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=study.study_name,
                tags={"dse_study": study.study_name, "dse_role": "parent"},
            )
            run_id = run.info.run_id
            # Another worker may have created one at the same moment: the earliest wins, the rest step aside.
            winner = self._earliest_parent(study.study_name)
            if winner is not None and winner != run_id:
                self.client.delete_run(run_id)
                run_id = winner
                _logger.info("Joined MLflow parent run %s created by another worker", run_id)
            else:
                self.log_params(run_id, params)
                _logger.info("Created MLflow parent run %s", run_id)
        study.set_user_attr(_PARENT_ATTR, run_id)
        self.parent_run_id = run_id
        self._delete_orphan_parents(study.study_name, run_id)
        return run_id

    def _delete_orphan_parents(self, study_name: str, parent: str) -> None:
        """A worker killed between creating its parent run and stepping aside leaves a second parent:
        whoever opens the study next deletes it (it holds no trial runs: those go under ``parent``)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.dse_study = '{study_name}' and tags.dse_role = 'parent'",
            max_results=1000,
        )
        for run in runs:
            if run.info.run_id != parent and not self._has_trial_runs(run.info.run_id):
                with contextlib.suppress(mlflow.exceptions.MlflowException):  # another worker deleted it first
                    self.client.delete_run(run.info.run_id)
                    _logger.info("Deleted parent run %s of a worker that died creating it", run.info.run_id)

    def _experiment_of(self, run_id: str) -> str | None:
        try:
            return str(self.client.get_run(run_id).info.experiment_id)
        except mlflow.exceptions.MlflowException:  # gone: open_parent says so and creates a new one
            return None

    def _has_trial_runs(self, parent: str) -> bool:
        children = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=1
        )
        return bool(children)

    def _earliest_parent(self, study_name: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.dse_study = '{study_name}' and tags.dse_role = 'parent'",
            max_results=1000,
        )
        if not runs:
            return None
        return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id

    def close_parent(self, status: str = "FINISHED") -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status=status)

    def _parent(self) -> str:
        if self.parent_run_id is None:
            raise RuntimeError("open_parent() must be called before logging to the study's parent run.")
        return self.parent_run_id

    def log_parent_table(self, table: pd.DataFrame, name: str, artifact_path: str | None = None) -> None:
        self.log_table(self._parent(), table, name, artifact_path)

    def log_parent_file(self, path: Path, artifact_path: str | None = None) -> None:
        self.log_file(self._parent(), path, artifact_path)

    def log_parent_json(self, name: str, payload: object) -> None:
        self.log_json(self._parent(), name, payload)

    def where(self) -> list[str]:
        """Where the study's front is, and how to open it (lines for the end-of-search message)."""
        if self.parent_run_id is None:
            return []
        run = self.client.get_run(self.parent_run_id)
        return [
            f"Front artifacts: {run.info.artifact_uri}/pareto/ (pareto_front.html, .png, .csv, pareto_assignments.png)",
            f"Open them: mlflow ui --backend-store-uri {self.tracking_uri}",
            f"  then http://127.0.0.1:5000/#/experiments/{self.experiment_id}/runs/{self.parent_run_id}{UI_VIEW}",
        ]

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        items = [Param(str(k)[:250], str(v)[:_MAX_PARAM_LEN]) for k, v in params.items()]
        for chunk in _chunks(items):
            self.client.log_batch(run_id, params=chunk)

    # -- child runs -------------------------------------------------------------------
    def start_trial(
        self, trial: optuna.Trial, params: Mapping[str, object], tags: Mapping[str, str] | None = None
    ) -> str:
        """Create the child run of ``trial`` (with ``tags`` besides its own) and log its parameters."""
        if self.parent_run_id is None:
            raise RuntimeError("open_parent() must be called before start_trial().")
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial.number:04d}",
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "dse_role": "trial",
                "dse_trial": str(trial.number),
                **(tags or {}),
            },
        )
        self.log_params(run.info.run_id, params)
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        return run.info.run_id

    # -- any run ---------------------------------------------------------------------
    def start_run(self, name: str, tags: Mapping[str, str], params: Mapping[str, object]) -> str:
        """A RUNNING run of its own (a retraining), with its tags and parameters; returns its id."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def kill_running_runs(self, tag: str, value: str) -> list[str]:
        """Mark KILLED every RUNNING run tagged ``tag=value`` (their process died); return their ids."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.{tag} = '{value}' and attributes.status = 'RUNNING'"
        )
        for run in runs:
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return [run.info.run_id for run in runs]

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def delete_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def running_trial_runs(self) -> dict[str, int]:
        """Run id -> trial number of this study's trial runs still RUNNING."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' and attributes.status = 'RUNNING'",
            max_results=5000,
        )
        tagged = {r.info.run_id: r.data.tags.get("dse_trial", "") for r in runs}
        return {run_id: int(number) for run_id, number in tagged.items() if number.isdigit()}

    def close_dead_run(self, run_id: str, reason: str) -> None:
        """End a run whose worker died (KILLED, with the reason), unless it has ended meanwhile."""
        if self.client.get_run(run_id).info.status != "RUNNING":
            return
        self.client.set_tag(run_id, "dse_killed", reason)
        self.client.set_terminated(run_id, status="KILLED")
        _logger.info("Closed MLflow run %s: %s", run_id, reason)

    def end_trial(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        tables: Mapping[str, pd.DataFrame] | None = None,
        status: str = "FINISHED",
    ) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for name, table in (tables or {}).items():
            self.log_table(run_id, table, name)
        self.client.set_terminated(run_id, status=status)

    def log_table(self, run_id: str, table: pd.DataFrame, name: str, artifact_path: str | None = None) -> None:
        """Log ``table`` as the CSV artifact ``name``."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            table.to_csv(path, index=False)
            self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    # -- Pareto front on the parent ---------------------------------------------------
    def log_front(
        self,
        study: optuna.Study,
        objectives: Sequence[Objective],
        hypervolume: float | None,
        n_complete: int,
        plots: bool,
        metrics: bool = True,
        layers: Callable[[], pd.DataFrame] | None = None,
    ) -> None:
        """Write the current front (CSV; HTML, PNG, the assignment heatmap and the per-layer costs
        ``layers()`` of its trials when ``plots``; computed only then) and the hypervolume to the parent."""
        parent = self._parent()
        front = front_table(study, objectives)
        self.log_table(parent, front, "pareto_front.csv", artifact_path="pareto")
        self.tag_pareto(study)
        if plots and not front.empty:
            everything = trials_table(study, objectives)
            with tempfile.TemporaryDirectory() as tmp:
                for plot, name in ((plot_front_png, "pareto_front.png"), (plot_front_html, "pareto_front.html")):
                    path = plot(everything, front, objectives, Path(tmp) / name)
                    self.client.log_artifact(parent, str(path), artifact_path="pareto")
                summary = Path(tmp) / "README.md"
                summary.write_text(study_summary(study, objectives, everything, front))
                self.client.log_artifact(parent, str(summary))
                heatmap = plot_front_heatmap(front, Path(tmp) / "pareto_assignments.png")
                if heatmap is not None:
                    self.client.log_artifact(parent, str(heatmap), "pareto")
            if layers is not None:
                self.log_table(parent, layers(), "pareto_layers.csv", "pareto")
            # the table the MLflow UI renders (artifact view, and the runs' "Evaluation" tab)
            shown = front[[c for c in front.columns if c not in ("assignment_key", "worker", "mlflow_run_id")]]
            self.replace_table(parent, shown, "pareto/pareto_front_table.json")
        if metrics:  # one point per complete trial: the UI draws the curves
            values = {"front_size": float(len(front)), "complete_trials": float(n_complete)}
            if hypervolume is not None:
                values["hypervolume"] = hypervolume
            self.log_metrics(parent, values, step=n_complete)

    def replace_table(self, run_id: str, table: pd.DataFrame, artifact_file: str) -> None:
        """Log ``table`` where the MLflow UI renders tables, replacing the previous version
        (``MlflowClient.log_table`` appends rows to an existing file instead)."""
        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            table.to_json(path, orient="split", index=False, date_format="iso")  # log_table's own format
            self.client.log_artifact(run_id, str(path), artifact_path=folder or None)
        logged = json.loads(self.client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
        entry = {"path": artifact_file, "type": "table"}
        if entry not in logged:
            self.client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*logged, entry]))

    def tag_pareto(self, study: optuna.Study) -> None:
        """Tag each trial's run ``pareto=true|false`` as the front is now (only the tags that change),
        so the UI's run list can filter ``tags.pareto = 'true'``."""
        front = {t.number for t in study.best_trials}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            run_id = t.user_attrs.get("mlflow_run_id")
            on = t.number in front
            if run_id and run_id in self._pareto_tags and self._pareto_tags[run_id] is None:
                continue  # not in this store
            if run_id and self._pareto_tags.get(run_id) != on:
                # several workers tag the same runs: MLflow's insert-if-absent races on SQL stores
                # (UNIQUE constraint failed); the retry finds the row and updates it
                try:
                    retry_on_race(
                        functools.partial(self.client.set_tag, run_id, "pareto", "true" if on else "false"),
                        is_write_race,
                    )
                except mlflow.exceptions.MlflowException as exc:
                    if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
                    # the trial was tracked into another MLflow store (the study resumed with another
                    # tracking URI): its run is not here to tag; the study itself is unaffected
                    if not any(v is None for v in self._pareto_tags.values()):
                        _logger.warning(
                            "Trial %d's MLflow run %s is not in %s (the study was tracked elsewhere before): "
                            "runs from that store keep their pareto tags there.",
                            t.number,
                            run_id,
                            self.tracking_uri,
                        )
                    self._pareto_tags[run_id] = None
                    continue
                self._pareto_tags[run_id] = on

    def log_standalone_run(
        self,
        name: str,
        tags: Mapping[str, str],
        params: Mapping[str, object],
        artifacts: Sequence[Path],
        artifact_path: str | None = None,
    ) -> str:
        """One finished run outside any study (e.g. a sensitivity table): params and files; returns its id."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))
        self.log_params(run.info.run_id, params)
        for path in artifacts:
            self.client.log_artifact(run.info.run_id, str(path), artifact_path=artifact_path)
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def log_json(self, run_id: str, name: str, payload: object) -> None:
        self.client.log_text(run_id, json.dumps(payload, indent=2, default=str), name)
