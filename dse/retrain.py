"""``python -m dse.retrain``: retrain a candidate with its approximation in the forward pass.

The candidate is a COMPLETE trial of a study (``study=<name> trial=<number>``, read from the
study's storage) or an assignment file (``assignment=<yaml>``). Activation ranges are
calibrated as the search calibrated them, so "before" is the trial's own model. The
retrained weights, learning curves and before/after accuracy go to an MLflow run tagged
with the study and trial; checkpoints under ``retrain.ckpt_dir`` make a re-run resume.
The shipped (or configured) baseline weights are never written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import optuna
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig

from dse.assignment import Assignment, LayerConfig, assignment_key, check_layer_names
from dse.candidates.retraining import RetrainResult, retrain_candidate
from dse.cli import run_command, writable_run_dir
from dse.config_building import (
    build_tracker,
    build_trained_model,
    candidate_evaluator,
    model_layer_groups,
    retrain_settings,
)
from dse.config_paths import CONFIG_DIR
from dse.exceptions import ConfigError
from dse.search_spaces import SearchSpace
from dse.study.create import load_studies
from dse.study.storage import describe_storage

__all__ = ["RetrainResult", "load_assignment", "run_retrain"]

_logger = logging.getLogger(__name__)


def _trial_assignment(cfg: DictConfig, model: torch.nn.Module) -> tuple[Assignment, dict[str, str]]:
    name = str(cfg.study.name)
    study = load_studies(instantiate(cfg.storage), [name], describe_storage(cfg.storage.url))[name]
    complete = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if cfg.trial not in complete:
        raise ConfigError(
            f"Study {cfg.study.name!r} has no COMPLETE trial {cfg.trial}; its complete trials: {complete}."
        )
    trial = study.trials[int(cfg.trial)]
    space: SearchSpace = instantiate(cfg.space)
    bound = space.bind(model, model_layer_groups(cfg.model, model))
    if study.user_attrs.get("space_params") not in (None, sorted(bound.params)):
        raise ConfigError(
            f"Study {cfg.study.name!r} was searched over {study.user_attrs['space_params']}, this config's space "
            f"has {sorted(bound.params)}: run dse.retrain with the study's own config (study=, space=)."
        )
    tags = {"dse_study": study.study_name, "dse_trial": str(trial.number)}
    if trial.user_attrs.get("mlflow_run_id"):
        tags["dse_trial_run_id"] = str(trial.user_attrs["mlflow_run_id"])
    return bound.assignment(trial.params), tags


def load_assignment(path: str | Path, model: torch.nn.Module) -> Assignment:
    """An assignment file: ``{layer name: {multiplier|decimals|weight_format|activation_format: value}}``."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"Assignment file {str(file)!r} does not exist.")
    raw = yaml.safe_load(file.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Assignment file {str(file)!r} must map layer names to knob settings.")
    check_layer_names(model, raw, f"Assignment file {str(file)!r}")
    try:
        return {name: LayerConfig(**dict(fields or {})) for name, fields in raw.items()}
    except TypeError as exc:
        raise ConfigError(f"Assignment file {str(file)!r}: {exc}; knobs are {list(LayerConfig().as_dict())}.") from exc


def run_retrain(cfg: DictConfig) -> RetrainResult:
    """Retrain the configured candidate; return its accuracy before and after."""
    if (cfg.trial is None) == (cfg.assignment is None):
        raise ConfigError("Give exactly one of trial=<number> (of study.name) or assignment=<file.yaml>.")
    model = build_trained_model(cfg.model)
    if cfg.trial is not None:
        assignment, tags = _trial_assignment(cfg, model)
        label = f"{cfg.study.name}/trial-{int(cfg.trial):04d}"
    else:
        assignment = load_assignment(cfg.assignment, model)
        tags, label = {"dse_assignment": str(cfg.assignment)}, f"assignment-{Path(cfg.assignment).stem}"
    settings = retrain_settings(cfg)
    result = retrain_candidate(
        model, assignment, candidate_evaluator(cfg, model), settings, label, build_tracker(cfg), tags
    )
    _logger.info("%s (%s): weights %s", label, assignment_key(assignment)[:80], result.weights)
    return result


@writable_run_dir
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="retrain")
def main(cfg: DictConfig) -> None:
    run_command(run_retrain, cfg)


if __name__ == "__main__":
    main()
