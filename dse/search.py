"""``python -m dse.search study=<name>``: run (or resume) a design-space exploration study.

``main`` only parses the command line; :func:`run_search` does the work and is
what tests and other tools call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import hydra
import optuna
import pandas as pd
import torch.nn as nn
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dse.candidate import CandidateEvaluator
from dse.config_paths import CONFIG_DIR
from dse.evaluation import Evaluator
from dse.cli import run_command
from dse.exceptions import ConfigError, DataError
from dse.search_spaces import BoundSpace, SearchSpace, load_sensitivity, prune_space
from dse.study.objectives import Objective, parse_objectives
from dse.study.runner import StudyRunner, StudySettings, count_complete
from dse.study.storage import create_storage, describe_storage
from dse.tracking.mlflow_tracker import MlflowTracker
from dse.tracking.pareto import front_table
from dse.training.weights import load_weights

__all__ = ["run_search", "SearchResult", "build_model", "main"]

_logger = logging.getLogger(__name__)
_MAX_GRID = 1_000_000


@dataclass
class SearchResult:
    study: optuna.Study
    front: pd.DataFrame
    parent_run_id: str | None


def build_model(model_cfg: DictConfig) -> nn.Module:
    """The configured architecture with its trained weights, in eval mode."""
    model = instantiate(model_cfg.builder)
    return load_weights(model, str(model_cfg.weights)).eval()


def build_sampler(sampler_cfg: DictConfig, space: BoundSpace) -> optuna.samplers.BaseSampler:
    if str(sampler_cfg.get("_target_", "")).endswith("GridSampler"):
        if space.size > _MAX_GRID:
            raise ConfigError(
                f"A grid over this space has {space.size:.3g} points; use space.granularity=uniform or group, "
                "fewer choices, or a sampler such as tpe/nsga2/random."
            )
        return instantiate(sampler_cfg, search_space=space.grid())
    return instantiate(sampler_cfg)


def open_study(cfg: DictConfig, objectives: list[Objective], space: BoundSpace) -> optuna.Study:
    """Create the study, or load it if it exists with the same objectives."""
    storage = create_storage(**cfg.storage)
    study = optuna.create_study(
        study_name=cfg.study.name,
        storage=storage,
        sampler=build_sampler(cfg.sampler, space),
        directions=[o.direction for o in objectives],
        load_if_exists=True,
    )
    names = [o.name for o in objectives]
    # Optuna rejects a parameter whose choices change within a study, so check both up front.
    choices = {name: [str(c) for c in values] for name, values in space.grid().items()}
    stored = study.user_attrs.get("objectives")
    if stored is None:
        study.set_user_attr("objectives", names)
        study.set_user_attr("space_params", sorted(space.params))
        study.set_user_attr("space_choices", choices)
    elif stored != names or study.user_attrs.get("space_params") != sorted(space.params):
        raise ConfigError(
            f"Study {cfg.study.name!r} in {describe_storage(cfg.storage.url)} was created with objectives {stored} and "
            f"parameters {study.user_attrs.get('space_params')}; this run asks for {names} and {sorted(space.params)}. "
            "Resume it with its original config, or pick a new study.name."
        )
    elif study.user_attrs.get("space_choices", choices) != choices:
        changed = sorted(n for n in choices if study.user_attrs["space_choices"].get(n) != choices[n])
        raise ConfigError(
            f"Study {cfg.study.name!r} was created with other choices for {changed[:3]} (a different space or "
            "pruning table). Resume it with its original space and pruning settings, or pick a new study.name."
        )
    return study


def final_evaluation(
    cfg: DictConfig, study: optuna.Study, space: BoundSpace, search: CandidateEvaluator, tracker: MlflowTracker | None
) -> pd.DataFrame | None:
    """Re-evaluate every Pareto trial on the full test set, once per trial (kept in study attrs).

    Quantized layers keep the activation ranges calibrated for the search, so the
    re-evaluated model is the very one the search scored.
    """
    if not cfg.final_eval.enabled:
        return None
    try:
        datamodule = instantiate(cfg.final_eval.data)
        evaluator = Evaluator(datamodule, **cfg.evaluation)
    except DataError as exc:
        _logger.info("Skipping the full-test-set re-evaluation (set DSE_CIFAR10_NPZ or final_eval.data.path): %s", exc)
        return None
    quantized = any(layer.multiplier for t in study.best_trials for layer in space.assignment(t.params).values())
    ranges = search.activation_ranges if quantized else None
    candidates = CandidateEvaluator(search.model, evaluator, search.energy_model, activation_ranges=ranges,
                                    latency_model=search.latency_model)
    rows = []
    for trial in study.best_trials:
        attr = f"final_eval/{trial.number}"
        result = study.user_attrs.get(attr)
        if result is None:
            metrics = candidates.evaluate(space.assignment(trial.params), timing=False).metrics
            result = {"final_accuracy": metrics["accuracy"], "final_accuracy_top5": metrics["accuracy_top5"],
                      "final_n_images": evaluator.n_images}
            study.set_user_attr(attr, result)
            run_id = trial.user_attrs.get("mlflow_run_id")
            if tracker is not None and run_id:
                tracker.log_metrics(run_id, result)
        rows.append({"trial": trial.number, **result})
    table = pd.DataFrame(rows)
    _logger.info("Pareto front on the full test set (%d images):\n%s", evaluator.n_images, table.to_string(index=False))
    return table


def run_search(cfg: DictConfig) -> SearchResult:
    """Run the study described by ``cfg`` until its trial budget is complete."""
    objectives = parse_objectives(OmegaConf.to_container(cfg.study.objectives))  # type: ignore[arg-type]
    timing = bool(cfg.study.get("measure_time", True))
    if not timing and any(o.name in ("inference_time_s", "ms_per_image") for o in objectives):
        raise ConfigError("study.measure_time=false, but an objective is a measured time; enable it or drop that objective.")
    model = build_model(cfg.model)
    space: SearchSpace = instantiate(cfg.space)
    bound = space.bind(model, OmegaConf.to_container(cfg.model.layer_groups))  # type: ignore[arg-type]
    pruning = cfg.get("pruning") or {}
    if pruning.get("table"):
        bound = prune_space(bound, load_sensitivity(pruning.table), float(pruning.max_drop_points))
    evaluator = Evaluator(instantiate(cfg.data), **cfg.evaluation)
    candidates = CandidateEvaluator(model, evaluator, instantiate(cfg.hardware.energy),
                                    latency_model=instantiate(cfg.hardware.latency))
    study = open_study(cfg, objectives, bound)
    _logger.info(
        "Study %r in %s: %d/%d complete trials; %d parameters, %.3g distinct assignments",
        study.study_name, describe_storage(cfg.storage.url), count_complete(study), cfg.study.n_trials,
        len(bound.params), bound.size,
    )
    tracker = None
    if cfg.tracking.enabled:
        tracker = MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
        summary = {
            "study": cfg.study.name, "model": cfg.model.name, "weights": cfg.model.weights,
            "data": cfg.data.path, "search_images": evaluator.n_images, "space": OmegaConf.to_yaml(cfg.space),
            "sampler": cfg.sampler._target_, "hardware": cfg.hardware.energy.name, "accelerator": cfg.hardware.latency.name, "n_trials": cfg.study.n_trials,
            "objectives": ",".join(f"{o.name}:{o.direction}" for o in objectives),
        }
        tracker.open_parent(study, summary)
        assert tracker.parent_run_id is not None
        indices = getattr(evaluator.datamodule, "test_indices", None)
        if indices is not None:
            tracker.log_json(tracker.parent_run_id, "search_subset_indices.json", [int(i) for i in indices])
        _logger.info("MLflow: parent run %s in experiment %r at %s", tracker.parent_run_id, cfg.tracking.experiment, cfg.tracking.uri)
    settings = StudySettings(
        n_trials=int(cfg.study.n_trials),
        objectives=objectives,
        max_accuracy_drop=cfg.study.get("max_accuracy_drop"),
        plot_every=int(cfg.tracking.get("plot_every", 5)),
        timing=timing,
    )
    runner = StudyRunner(study, bound, candidates, settings, tracker)
    status = "FAILED"
    try:
        done = runner.run()
        final = final_evaluation(cfg, study, bound, candidates, tracker)
        runner.publish(done, final=True)
        if tracker is not None and tracker.parent_run_id is not None and final is not None:
            merged = front_table(study, objectives).merge(final, on="trial", how="left")
            tracker.log_table(tracker.parent_run_id, merged, "pareto_front_final.csv", artifact_path="pareto")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            tracker.close_parent(status)
    front = front_table(study, objectives)
    _logger.info("Done: %d complete trials, %d on the Pareto front.", count_complete(study), len(front))
    return SearchResult(study, front, tracker.parent_run_id if tracker else None)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    run_command(run_search, cfg)


if __name__ == "__main__":
    main()
