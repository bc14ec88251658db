"""Which candidate a command acts on: a COMPLETE trial of a study, or an assignment file.

``python -m dse.retrain`` and ``python -m dse.export`` take ``study=<name> trial=<n>`` or
``assignment=<yaml>``; both read it here, so both refuse the same bad requests the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from dse.assignment import Assignment, LayerConfig, check_layer_names
from dse.config_building import model_layer_groups
from dse.exceptions import ConfigError
from dse.search_spaces import SearchSpace
from dse.study.create import load_studies
from dse.study.storage import describe_storage

__all__ = ["ChosenCandidate", "chosen_candidate", "load_assignment"]


@dataclass(frozen=True)
class ChosenCandidate:
    """An assignment, where it came from (MLflow tags linking to it), and a short label for names."""

    assignment: Assignment
    label: str
    tags: dict[str, str]
    study: optuna.Study | None = None
    trial: optuna.trial.FrozenTrial | None = None
    source: dict[str, object] = field(default_factory=dict)  # for records: study and trial, or the file


def _trial_candidate(cfg: DictConfig, model: nn.Module) -> ChosenCandidate:
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
            f"has {sorted(bound.params)}: run this command with the study's own config (study=, space=)."
        )
    tags = {"dse_study": study.study_name, "dse_trial": str(trial.number)}
    if trial.user_attrs.get("mlflow_run_id"):
        tags["dse_trial_run_id"] = str(trial.user_attrs["mlflow_run_id"])
    return ChosenCandidate(
        bound.assignment(trial.params),
        f"{name}/trial-{trial.number:04d}",
        tags,
        study,
        trial,
        {"study": name, "trial": trial.number, "storage": describe_storage(cfg.storage.url)},
    )


def load_assignment(path: str | Path, model: nn.Module) -> Assignment:
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


def chosen_candidate(cfg: DictConfig, model: nn.Module) -> ChosenCandidate:
    """The candidate ``cfg`` names: ``trial=<n>`` of ``study.name``, or ``assignment=<yaml>`` (exactly one)."""
    if (cfg.trial is None) == (cfg.assignment is None):
        raise ConfigError("Give exactly one of trial=<number> (of study.name) or assignment=<file.yaml>.")
    if cfg.trial is not None:
        return _trial_candidate(cfg, model)
    path = str(cfg.assignment)
    return ChosenCandidate(
        load_assignment(path, model),
        f"assignment-{Path(path).stem}",
        {"dse_assignment": path},
        source={"assignment": str(Path(path).absolute())},
    )
