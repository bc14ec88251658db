"""``python -m dse.search study=<name>``: run (or resume) a design-space exploration study.

``main`` only parses the command line; :func:`run_search` does the work and is
what tests and other tools call. Each config group is instantiated as it names
(``conf/`` mirrors the code); the study's construction lives in :mod:`dse.study`.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import hydra
import optuna
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dse.candidate import candidate_evaluator
from dse.cli import run_command
from dse.config_paths import CONFIG_DIR
from dse.interrupt import Interrupted, stop_on_signals
from dse.search_spaces import SearchSpace, load_sensitivity, prune_space
from dse.sensitivity import plot_sensitivity
from dse.study.create import open_study
from dse.study.final_evaluation import final_evaluation
from dse.study.objectives import parse_objectives
from dse.study.retraining import SearchRetraining, check_retrain_settings, retrained_front
from dse.study.runner import StudyRunner, StudySettings, count_complete
from dse.study.sampler import build_sampler
from dse.study.screening import ScreeningRule
from dse.study.storage import describe_storage, has_heartbeat
from dse.tracking.mlflow_tracker import MlflowTracker
from dse.tracking.pareto import front_table, plot_retrained_front_png
from dse.training.weights import build_trained_model
from dse.workers import sole_sqlite_worker, worker_index

__all__ = ["SearchResult", "main", "run_search"]

_logger = logging.getLogger(__name__)
_WORKER_SEED_STRIDE = 100_003  # workers launched together draw from seeds this far apart


@dataclass
class SearchResult:
    study: optuna.Study
    front: pd.DataFrame
    parent_run_id: str | None


def _settings(cfg: DictConfig) -> StudySettings:
    """The loop's settings, validated before anything is created or evaluated."""
    study = cfg.study
    return StudySettings(
        n_trials=study.n_trials,
        objectives=parse_objectives(OmegaConf.to_container(study.objectives)),  # type: ignore[arg-type]
        max_accuracy_drop=study.max_accuracy_drop,
        max_duplicate_streak=study.max_duplicate_streak,
        max_failure_streak=study.max_failure_streak,
        timing=bool(study.measure_time),
        seed_uniform=bool(study.seed_uniform),
    )


def run_search(cfg: DictConfig) -> SearchResult:
    """Run the study described by ``cfg`` until its trial budget is complete.

    SIGINT/SIGTERM stop it cleanly (:mod:`dse.interrupt`): the running trial is failed and
    queued again, the runs are closed, the front is written, and :class:`Interrupted` is raised
    (``python -m dse.search`` exits 130/143). A SQLite study takes one worker at a time.
    """
    with stop_on_signals(), contextlib.ExitStack() as held:
        return _run_search(cfg, held)


def _run_search(cfg: DictConfig, held: contextlib.ExitStack) -> SearchResult:
    settings = _settings(cfg)
    objectives = list(settings.objectives)
    check_retrain_settings(cfg.retrain, objectives)
    screening = (  # validated here, before anything is created
        ScreeningRule(objectives, int(cfg.screening.first_images), float(cfg.screening.alpha))
        if cfg.screening.enabled
        else None
    )
    model = build_trained_model(cfg.model)
    space: SearchSpace = instantiate(cfg.space)
    bound = space.bind(model, dict(cfg.model.layer_groups))
    if cfg.pruning.table:
        bound = prune_space(bound, load_sensitivity(cfg.pruning.table), float(cfg.pruning.max_drop_points))
    candidates = candidate_evaluator(cfg, model)
    evaluator = candidates.evaluator
    held.enter_context(sole_sqlite_worker(str(cfg.storage.url)))  # after validation: bad input creates nothing
    storage = instantiate(cfg.storage)
    where = describe_storage(cfg.storage.url)
    study = open_study(cfg.study.name, storage, build_sampler(cfg.sampler, bound), objectives, bound, where)
    grid = str(cfg.sampler.get("_target_", "")).endswith("GridSampler")
    index = worker_index()
    if (study.trials or index) and cfg.sampler.get("seed") is not None and not grid:
        # A resumed study (or a worker joining one) must not replay the draws of the process that started
        # it: the same seed would propose the same points again, all pruned as duplicates. Shift the seed
        # by the trials already there, and by the worker's index for workers launched at the same moment
        # (a job array): still reproducible from the study's state. (Not the grid sampler: its seed fixes
        # the order its stored grid ids refer to, and it never proposes a point twice.)
        seed = int(cfg.sampler.seed) + len(study.trials) + _WORKER_SEED_STRIDE * index
        shifted = OmegaConf.merge(cfg.sampler, {"seed": seed})
        study.sampler = build_sampler(shifted, bound)  # type: ignore[arg-type]
    _logger.info(
        "Study %r in %s: %d/%d complete trials; %d parameters, %.3g distinct assignments",
        study.study_name,
        where,
        count_complete(study),
        settings.n_trials,
        len(bound.params),
        bound.size,
    )
    tracker: MlflowTracker | None = instantiate(cfg.tracking) if cfg.tracking else None
    if tracker is not None:
        summary = {
            "study": cfg.study.name,
            "model": cfg.model.name,
            "weights": cfg.model.weights,
            "data": cfg.data.path,
            "search_images": evaluator.n_images,
            "space": OmegaConf.to_yaml(cfg.space),
            "sampler": cfg.sampler._target_,
            "hardware": cfg.hardware.energy.name,
            "accelerator": cfg.hardware.latency.name,
            "n_trials": settings.n_trials,
            "objectives": ",".join(f"{o.name}:{o.direction}" for o in objectives),
        }
        parent = tracker.open_parent(study, summary)
        if cfg.pruning.table:  # the sensitivity behind the pruned space, beside the front
            table = load_sensitivity(cfg.pruning.table)
            with tempfile.TemporaryDirectory() as tmp:
                png = plot_sensitivity(table, str(table["knob"].iloc[0]), Path(tmp) / "sensitivity.png")
                tracker.client.log_artifact(parent, str(png), "sensitivity")
        indices = getattr(evaluator.datamodule, "test_indices", None)
        if indices is not None:
            tracker.log_json(parent, "search_subset_indices.json", [int(i) for i in indices])
        _logger.info("MLflow: parent run %s in experiment %r at %s", parent, tracker.experiment, tracker.tracking_uri)
    retraining = SearchRetraining(model, bound, candidates, cfg.retrain, tracker) if cfg.retrain.enabled else None
    runner = StudyRunner(
        study,
        bound,
        candidates,
        settings,
        tracker,
        running_is_live=has_heartbeat(storage),
        retraining=retraining if cfg.retrain.on == "each" else None,
        screening=screening,
    )
    status = "FAILED"
    try:
        done = runner.run()
        if retraining is not None:
            if cfg.retrain.on == "front":
                retraining.retrain_front(study)
            _publish_retrained(study, tracker)
        final = None
        if cfg.final_eval.enabled:
            final = final_evaluation(
                study, bound, candidates, lambda: instantiate(cfg.final_eval.data), instantiate(cfg.evaluation), tracker
            )
        runner.publish(done, final=True)
        if tracker is not None and tracker.parent_run_id is not None and final is not None:
            merged = front_table(study, objectives).merge(final, on="trial", how="left")
            tracker.log_table(tracker.parent_run_id, merged, "pareto_front_final.csv", artifact_path="pareto")
        status = "FINISHED"
    except Interrupted as exc:
        status = "KILLED"
        runner.publish(count_complete(study), final=True)  # the front of what completed, plots included
        _logger.warning(interrupted_message(study, runner, exc))
        exc.reported = True
        raise
    finally:
        if tracker is not None:
            tracker.close_parent(status)
    front = front_table(study, objectives)
    _logger.info(end_of_search_message(study, front, tracker))
    return SearchResult(study, front, tracker.parent_run_id if tracker else None)


def interrupted_message(study: optuna.Study, runner: StudyRunner, exc: Interrupted) -> str:
    """One line: what a signal stopped, what is kept, how to resume."""
    stopped = (
        f"; trial {runner.interrupted_trial} was stopped and will be retried"
        if runner.interrupted_trial is not None
        else ""
    )
    return (
        f"Interrupted by {exc}: {count_complete(study)}/{runner.settings.n_trials} trials complete in study "
        f"{study.study_name!r}{stopped}. Re-run the same command to resume."
    )


def _assignment_summary(params: dict[str, object]) -> str:
    """A few parameters each by name (``first_conv=3 depthwise=exact``); many (per-layer spaces) as how
    often each knob takes each value (``decimals: 3 x20, exact x33``)."""
    if len(params) <= 6:
        return " ".join(f"{name.split('.', 1)[-1]}={value}" for name, value in params.items())
    by_knob: dict[str, Counter[str]] = {}
    for name, value in params.items():
        by_knob.setdefault(name.split(".", 1)[0], Counter())[str(value)] += 1
    return " | ".join(
        f"{knob}: " + ", ".join(f"{v} x{n}" for v, n in counts.most_common()) for knob, counts in by_knob.items()
    )


def end_of_search_message(study: optuna.Study, front: pd.DataFrame, tracker: MlflowTracker | None) -> str:
    """What the search found and where to look: the front as a small table, its artifacts, the UI command."""
    lines = [f"Done: {count_complete(study)} complete trials, {len(front)} on the Pareto front."]
    if not front.empty:
        columns = {
            "accuracy": ("top-1 %", 100.0),
            "energy_uj": ("energy uJ", 1.0),
            "modeled_latency_us": ("latency us", 1.0),
            "inference_time_s": ("time s", 1.0),
        }
        table = pd.DataFrame({"trial": front["trial"]})
        for name, (label, scale) in columns.items():
            if name in front and front[name].astype(float).notna().any():  # (time: only when measured)
                table[label] = (front[name].astype(float) * scale).map(lambda v: f"{v:.4g}")
        params = {t.number: t.params for t in study.best_trials}
        table["assignment"] = [_assignment_summary(params[int(n)])[:90] for n in front["trial"]]
        lines += ["", table.to_string(index=False), ""]
    if tracker is not None and tracker.parent_run_id is not None:
        run = tracker.client.get_run(tracker.parent_run_id)
        lines += [
            f"Front artifacts: {run.info.artifact_uri}/pareto/ (pareto_front.html, .png, .csv, pareto_assignments.png)",
            f"Open them: mlflow ui --backend-store-uri {tracker.tracking_uri}",
            f"  then http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs/{tracker.parent_run_id}",
        ]
    return "\n".join(lines)


def _publish_retrained(study: optuna.Study, tracker: MlflowTracker | None) -> None:
    """The retrained trials before and after (CSV + plot with arrows) on the parent run, and in the log."""
    table = retrained_front(study)
    if table.empty:
        return
    _logger.info("Accuracy before and after retraining (search set):\n%s", table.to_string(index=False))
    if tracker is None or tracker.parent_run_id is None:
        return
    tracker.log_table(tracker.parent_run_id, table, "pareto_front_retrained.csv", artifact_path="pareto")
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_retrained_front_png(table, Path(tmp) / "pareto_front_retrained.png")
        tracker.client.log_artifact(tracker.parent_run_id, str(path), artifact_path="pareto")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    run_command(run_search, cfg)


if __name__ == "__main__":
    main()
