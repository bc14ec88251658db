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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import optuna
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dse.candidates.evaluator import CandidateEvaluator
from dse.candidates.retraining import RetrainSettings
from dse.cli import full_tracebacks_hint, run_command, writable_run_dir
from dse.config_building import (
    build_sampler,
    build_tracker,
    build_trained_model,
    candidate_evaluator,
    check_hardware,
    check_held_out,
    evaluator_on,
    hydra_job_number,
    model_layer_groups,
    retrain_settings,
    study_settings,
)
from dse.config_paths import CONFIG_DIR
from dse.deployment.layer_arithmetic import undeployable_layers
from dse.exceptions import ConfigError, TrialsFailed
from dse.objectives import DEPLOYED_METRICS, Objective
from dse.optuna_internals import storage_of
from dse.search_spaces import BoundSpace, SearchSpace, load_sensitivity, prune_space
from dse.sensitivity import plot_sensitivity
from dse.store_urls import SQLITE_PREFIX
from dse.study.create import open_study
from dse.study.final_evaluation import final_evaluation
from dse.study.runner import StudyRunner, count_complete
from dse.study.screening import ScreeningRule
from dse.study.search_retraining import RETRAINED, SearchRetraining, check_retrain_settings, retrained_front
from dse.study.settings import StudySettings
from dse.study.storage import describe_storage, has_heartbeat
from dse.tracking.pareto import front_table, plot_retrained_front_png, trials_table
from dse.tracking.summary import interval_text
from dse.tracking.tracker import Tracker
from dse.worker.local_workers import LocalWorkers
from dse.worker.process import sole_sqlite_worker, worker_index
from dse.worker.signals import Interrupted, stop_on_signals

__all__ = ["SearchResult", "main", "run_search"]

_logger = logging.getLogger(__name__)
_WORKER_SEED_STRIDE = 100_003  # workers launched together draw from seeds this far apart


@dataclass
class SearchResult:
    study: optuna.Study
    front: pd.DataFrame
    parent_run_id: str | None


def run_search(cfg: DictConfig) -> SearchResult:
    """Run the study described by ``cfg`` until its trial budget is complete.

    SIGINT/SIGTERM stop it cleanly (:mod:`dse.worker.signals`): the running trial is failed and
    queued again, the runs are closed, the front is written, and :class:`Interrupted` is raised
    (``python -m dse.search`` exits 130/143). A SQLite study takes one worker at a time.
    """
    with stop_on_signals(), contextlib.ExitStack() as held:
        return _run_search(cfg, held)


@dataclass
class _Parts:
    """What a search is made of, built and validated from the config before anything is created."""

    settings: StudySettings
    screening: ScreeningRule | None
    retrain: RetrainSettings | None
    bound: BoundSpace
    candidates: CandidateEvaluator


def _parts(cfg: DictConfig) -> _Parts:
    check_held_out(cfg)
    settings = study_settings(cfg)
    check_hardware(cfg, settings)
    objectives = list(settings.objectives)
    retrain = retrain_settings(cfg) if cfg.retrain.enabled or any(o.name == RETRAINED for o in objectives) else None
    if retrain is not None:
        check_retrain_settings(retrain, objectives)
    screening = (
        ScreeningRule(objectives, int(cfg.screening.first_images), float(cfg.screening.alpha))
        if cfg.screening.enabled
        else None
    )
    model = build_trained_model(cfg.model)
    space: SearchSpace = instantiate(cfg.space)
    bound = space.bind(model, model_layer_groups(cfg.model, model))
    if cfg.pruning.table:
        bound = prune_space(bound, load_sensitivity(cfg.pruning.table), float(cfg.pruning.max_drop_points))
    candidates = candidate_evaluator(cfg, model)
    if settings.deploys:  # every choice must deploy: the uniform assignments hold each once
        for params in bound.uniform_params():
            emulated = undeployable_layers(candidates.deployment(bound.assignment(params)))
            if emulated:
                raise ConfigError(
                    "The study's objectives or constraints use an ONNX Runtime measurement "
                    f"({', '.join(DEPLOYED_METRICS)}), "
                    f"but the space offers {params}, which no runtime runs as dse emulates it (decimal "
                    "places or approximate multipliers: layers "
                    f"{emulated[:3]}). Search formats (space=formats_group) or use modeled_latency_us."
                )
    return _Parts(settings, screening, retrain, bound, candidates)


def _open(cfg: DictConfig, parts: _Parts) -> optuna.Study:
    """Create or resume the study, its sampler seeded for this worker."""
    where = describe_storage(cfg.storage.url)
    objectives = list(parts.settings.objectives)
    study = open_study(
        cfg.study.name,
        instantiate(cfg.storage),
        build_sampler(cfg.sampler, parts.bound),
        objectives,
        parts.bound,
        where,
    )
    grid = str(cfg.sampler.get("_target_", "")).endswith("GridSampler")
    index = worker_index(hydra_job_number())
    if (study.trials or index) and cfg.sampler.get("seed") is not None and not grid:
        # A resumed study (or a worker joining one) must not replay the draws of the process that started
        # it: the same seed would propose the same points again, all pruned as duplicates. Shift the seed
        # by the trials already there, and by the worker's index for workers launched at the same moment
        # (a job array): still reproducible from the study's state. (Not the grid sampler: its seed fixes
        # the order its stored grid ids refer to, and it never proposes a point twice.)
        seed = int(cfg.sampler.seed) + len(study.trials) + _WORKER_SEED_STRIDE * index
        study.sampler = build_sampler(cfg.sampler, parts.bound, seed=seed)
    _logger.info(
        "Study %r in %s: %d/%d complete trials; %d parameters, %.3g distinct assignments",
        study.study_name,
        where,
        count_complete(study),
        parts.settings.n_trials,
        len(parts.bound.params),
        parts.bound.size,
    )
    return study


def _open_parent_run(cfg: DictConfig, tracker: Tracker, study: optuna.Study, parts: _Parts) -> None:
    """The study's parent run: what was searched, the search subset's indices, the sensitivity behind pruning."""
    evaluator = parts.candidates.evaluator
    summary = {
        "study": cfg.study.name,
        "model": cfg.model.name,
        "weights": cfg.model.weights,
        "data": cfg.data.path,
        "search_images": evaluator.n_images,
        "search_split": cfg.data.get("test_split", "all"),  # the front is reported on the other half
        "space": OmegaConf.to_yaml(cfg.space),
        "sampler": cfg.sampler._target_,
        "hardware": cfg.hardware.energy.name,
        "accelerator": cfg.hardware.latency.name if cfg.hardware.get("latency") else "none",
        "n_trials": parts.settings.n_trials,
        "objectives": ",".join(f"{o.name}:{o.direction}" for o in parts.settings.objectives),
    }
    tracker.open_parent(study, summary)
    if cfg.pruning.table:  # the sensitivity behind the pruned space, beside the front
        table = load_sensitivity(cfg.pruning.table)
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_sensitivity(table, str(table["knob"].iloc[0]), Path(tmp) / "sensitivity.png")
            tracker.log_parent_file(png, "sensitivity")
    indices = getattr(evaluator.datamodule, "test_indices", None)
    if indices is not None:
        tracker.log_parent_json("search_subset_indices.json", [int(i) for i in indices])


def _local_workers(cfg: DictConfig) -> LocalWorkers | None:
    """``study.local_workers`` > 1: the other workers this command starts (checked before anything is created)."""
    n = cfg.study.get("local_workers", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"study.local_workers={n!r}: give a whole number of worker processes, e.g. 2.")
    if n == 1:
        return None
    if str(cfg.storage.url).startswith(SQLITE_PREFIX):
        raise ConfigError(
            f"study.local_workers={n} runs {n} worker processes on one study, which a SQLite storage does not "
            "take: add storage=journal (a file) or storage=postgres (a server)."
        )
    if not HydraConfig.initialized():
        raise ConfigError("study.local_workers starts copies of the command: run it as python -m dse.search.")
    hydra = HydraConfig.get()
    OmegaConf.update(cfg, "evaluation.threads", 1)  # one thread a worker: the point of several
    return LocalWorkers(n, list(hydra.overrides.task), Path(hydra.runtime.output_dir))


def _run_search(cfg: DictConfig, held: contextlib.ExitStack) -> SearchResult:
    helpers = _local_workers(cfg)
    parts = _parts(cfg)
    held.enter_context(sole_sqlite_worker(str(cfg.storage.url)))  # after validation: bad input creates nothing
    study = _open(cfg, parts)
    tracker = build_tracker(cfg)
    _open_parent_run(cfg, tracker, study, parts)
    if helpers is not None:  # the study and its parent run exist: the others join them
        helpers.start()
        held.callback(helpers.close)  # on any way out: stopped if still running, waited for
    retraining = (
        SearchRetraining(parts.candidates.model, parts.bound, parts.candidates, parts.retrain, tracker)
        if parts.retrain is not None and parts.retrain.enabled
        else None
    )
    runner = StudyRunner(
        study,
        parts.bound,
        parts.candidates,
        parts.settings,
        tracker,
        running_is_live=has_heartbeat(storage_of(study)),
        retraining=retraining if cfg.retrain.on == "each" else None,
        screening=parts.screening,
    )
    status = "FAILED"
    try:
        done = runner.run()
        if helpers is not None:  # the budget is complete: the others end too; then the front is final
            helpers.finish()
        if retraining is not None:
            if cfg.retrain.on == "front":
                retraining.retrain_front(study)
            _publish_retrained(study, tracker)
        final = None
        if cfg.final_eval.enabled:
            final = final_evaluation(
                study, parts.bound, parts.candidates, lambda: evaluator_on(cfg, cfg.final_eval.data), tracker
            )
        runner.publish(done, final=True)
        if final is not None:
            merged = front_table(study, parts.settings.objectives).merge(final, on="trial", how="left")
            tracker.log_parent_table(merged, "pareto_front_final.csv", artifact_path="pareto")
        status = "FINISHED" if runner.stopped_by_failures is None else "FAILED"
    except Interrupted as exc:
        status = "KILLED"
        if helpers is not None:
            helpers.stop(exc.signum)  # each stops cleanly; they are waited for on the way out
        runner.publish(count_complete(study), final=True)  # the front of what completed, plots included
        _logger.warning(interrupted_message(study, runner, exc))
        exc.reported = True
        raise
    finally:
        tracker.close_parent(status)
    front = front_table(study, parts.settings.objectives)
    _logger.info(end_of_search_message(study, front, tracker, parts.settings.objectives))
    if runner.stopped_by_failures is not None:  # published what finished; the run itself did not work
        raise TrialsFailed(f"{runner.stopped_by_failures}{full_tracebacks_hint()}")
    return SearchResult(study, front, tracker.parent_run_id)


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


def end_of_search_message(
    study: optuna.Study, front: pd.DataFrame, tracker: Tracker, objectives: Sequence[Objective] = ()
) -> str:
    """What the search found and where to look: the front as a small table beside the reference points (the
    exact model and the uniform settings of the space, marked), its artifacts, the UI command."""
    lines = [f"Done: {count_complete(study)} complete trials, {len(front)} on the Pareto front."]
    if not front.empty and "reference" in front:
        everything = trials_table(study, objectives) if objectives else front
        references = everything[(everything["reference"] != "") & ~everything["trial"].isin(front["trial"])]
        front = pd.concat([front.assign(on_front="yes"), references.assign(on_front="no")], ignore_index=True)
    if not front.empty:
        columns = {  # name: (heading, scale, format): one format per column
            "accuracy": ("top-1 %", 100.0, "{:.2f}"),
            "energy_uj": ("energy uJ", 1.0, "{:.4g}"),  # 4 digits: a GRU costs 0.14 uJ, MobileNetV2 10
            "modeled_latency_us": ("latency us", 1.0, "{:.1f}"),
            "inference_time_s": ("time s", 1.0, "{:.4f}"),
            "deployed_latency_ms": ("ONNX Runtime ms", 1.0, "{:.3f}"),
            "deployed_speedup_vs_fp32": ("vs fp32", 1.0, "{:.2f}x"),
        }
        table = pd.DataFrame({"trial": front["trial"]})
        if "reference" in front:
            table["front"] = front["on_front"].fillna("yes") if "on_front" in front else "yes"
            table["reference"] = front["reference"]
        for name, (label, scale, form) in columns.items():
            if name in front and front[name].astype(float).notna().any():  # (time: only when measured)
                values = front[name].astype(float) * scale
                table[label] = values.map(lambda v, f=form: "" if pd.isna(v) else f.format(v))
        if {"accuracy_low", "accuracy_high", "n_images"} <= set(front):  # how sure: 95% interval, images behind it
            table.insert(
                table.columns.get_loc("top-1 %") + 1,
                "95% interval (search images)",
                [
                    interval_text(lo, hi, n)
                    for lo, hi, n in zip(front["accuracy_low"], front["accuracy_high"], front["n_images"], strict=True)
                ],
            )
        params = {t.number: t.params for t in study.get_trials(deepcopy=False)}
        table["assignment"] = [_assignment_summary(params[int(n)])[:90] for n in front["trial"]]
        lines += ["", table.to_string(index=False), ""]
    lines += tracker.where()
    return "\n".join(lines)


def _publish_retrained(study: optuna.Study, tracker: Tracker) -> None:
    """The retrained trials before and after (CSV + plot with arrows) on the parent run, and in the log."""
    table = retrained_front(study)
    if table.empty:
        return
    _logger.info("Accuracy before and after retraining (search set):\n%s", table.to_string(index=False))
    tracker.log_parent_table(table, "pareto_front_retrained.csv", artifact_path="pareto")
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_retrained_front_png(table, Path(tmp) / "pareto_front_retrained.png")
        tracker.log_parent_file(path, artifact_path="pareto")


@writable_run_dir
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    run_command(run_search, cfg)


if __name__ == "__main__":
    main()
