"""The library's objects, built from a composed Hydra config: what every ``python -m dse.<command>`` hands on.

Commands (``dse.search``, ``dse.retrain``, ``dse.compare``, ``dse.status``, ``dse.sensitivity``,
``dse.report``, ``dse.training.train``) compose the config and call these builders; the library
below them takes typed settings and objects, never a ``DictConfig``. Each config group names what
it builds (``_target_``), so a builder here only says how the groups fit together.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dse.batchnorm_folding import fold_batchnorm
from dse.candidates.evaluation import Evaluator
from dse.candidates.evaluator import CandidateEvaluator
from dse.candidates.retraining import RetrainSettings
from dse.deployment.runtime import DeployedTiming
from dse.emulation import unroll_recurrent
from dse.exceptions import ConfigError
from dse.objectives import parse_bounds, parse_objectives
from dse.search_spaces import BoundSpace
from dse.search_spaces.layer_groups import groups_by_kind, resolve_groups
from dse.study.sampler import sampler_for_space
from dse.study.settings import StudySettings
from dse.tracking.tracker import NullTracker, Tracker
from dse.training.weights import load_weights

_logger = logging.getLogger(__name__)

__all__ = [
    "build_sampler",
    "build_tracker",
    "build_trained_model",
    "candidate_evaluator",
    "check_hardware",
    "check_held_out",
    "evaluator_on",
    "hydra_job_number",
    "model_layer_groups",
    "retrain_settings",
    "study_settings",
]


def build_trained_model(model_cfg: Any) -> nn.Module:
    """A model config's architecture (``builder``) with its ``weights`` (null: the builder's own), in eval
    mode, each BatchNorm folded into its convolution when ``fold_batchnorm`` (the default), each GRU/LSTM/RNN
    unrolled into one Linear per weight matrix (:func:`dse.emulation.unroll_recurrent`)."""
    builder = model_cfg.get("builder")
    if not isinstance(builder, DictConfig) or "_target_" not in builder or OmegaConf.is_missing(builder, "_target_"):
        raise ConfigError(
            "model.builder._target_ is not set: name the callable that builds your model, e.g. "
            "model=custom model.builder._target_=my_package.my_module.MyNet (or model=torchvision model.arch=resnet18)."
        )
    target = builder._target_
    try:
        net = instantiate(builder)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"model.builder ({target}) failed: {type(cause).__name__}: {cause}. Its arguments are the other keys of "
            f"model.builder ({', '.join(str(k) for k in builder if k != '_target_') or 'none'}): add one with "
            "+model.builder.<name>=<value>, drop one with ~model.builder.<name>, or start from model=custom."
        ) from exc
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model.builder ({target}) returned a {type(net).__name__}, not a torch.nn.Module.")
    weights = model_cfg.get("weights")
    if weights is None:
        _logger.warning(
            "model.weights is null: searching %s's initial weights, not a trained model. "
            "Give model.weights=/path/state_dict.pt (saved with torch.save(net.state_dict(), path)).",
            target,
        )
    else:
        load_weights(net, str(weights))
    net.eval()
    if model_cfg.get("fold_batchnorm", True):
        folded = fold_batchnorm(net)
        _logger.info("Folded %d BatchNorm layer(s) into their convolutions (model.fold_batchnorm).", len(folded))
    elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        _logger.warning(
            "model.fold_batchnorm=false: BatchNorm layers stay float32 after quantized layers and cost nothing "
            "in the cost model."
        )
    unrolled = unroll_recurrent(net)
    if unrolled:
        _logger.info(
            "Unrolled %d recurrent layer(s) into one Linear per weight matrix (%s): each takes a multiplier, "
            "decimal places or formats (dse/emulation/recurrent.py).",
            len(unrolled),
            ", ".join(unrolled),
        )
    return net


def model_layer_groups(model_cfg: Any, model: nn.Module) -> dict[str, str]:
    """The model config's ``layer_groups`` (name -> regex on module names); without them, the layers grouped
    by kind (:func:`dse.search_spaces.layer_groups.groups_by_kind`), said in the log."""
    given = model_cfg.get("layer_groups")
    if given:
        return dict(given)
    groups = groups_by_kind(model)
    members = resolve_groups(model, groups)
    _logger.info(
        "model.layer_groups is not set: layers grouped by kind: %s.",
        ", ".join(f"{g} ({len(m)})" for g, m in members.items()),
    )
    return groups


def evaluator_on(cfg: DictConfig, data_cfg: Any) -> Evaluator:
    """The ``evaluation`` group's evaluator on the data module ``data_cfg`` builds."""
    return instantiate(cfg.evaluation)(instantiate(data_cfg))


def candidate_evaluator(cfg: DictConfig, model: nn.Module) -> CandidateEvaluator:
    """Candidates of ``model`` on the search set (the ``evaluation``, ``data``, ``hardware``, ``emulation`` groups)."""
    return CandidateEvaluator(
        model,
        evaluator_on(cfg, cfg.data),
        instantiate(cfg.hardware.energy),
        latency_model=instantiate(cfg.hardware.latency) if cfg.hardware.get("latency") else None,
        emulation_path=cfg.emulation.path,
        per_channel=cfg.emulation.per_channel,
        deployed_timing=DeployedTiming(
            tuple(int(b) for b in cfg.deployment.batch_sizes), int(cfg.deployment.repeats), int(cfg.deployment.threads)
        ),
    )


def check_held_out(cfg: DictConfig) -> None:
    """Refuse a final evaluation whose images may have chosen the configurations it reports.

    The search scores candidates on one half of the test set and the front is reported on the other
    (``training.cifar10.half_of_test_set``); any other pairing lets selection inflate the reported accuracy.
    """
    if not cfg.final_eval.enabled:
        return
    search, held = str(cfg.data.get("test_split", "all")), str(cfg.final_eval.data.get("test_split", "all"))
    if (search, held) != ("search", "held_out"):
        raise ConfigError(
            f"data.test_split={search} and final_eval.data.test_split={held} can share images, so the front's "
            "reported accuracy could come from the images that chose it. Search on data.test_split=search and "
            "report on final_eval.data.test_split=held_out (the defaults), or skip it: final_eval.enabled=false."
        )


def check_hardware(cfg: DictConfig, settings: StudySettings) -> None:
    """Refuse objectives and constraints the ``hardware`` preset cannot price (e.g. a modeled latency
    without a ``latency`` section), before anything runs."""
    used = {o.name for o in settings.objectives} | {b.metric for b in settings.constraints}
    # every trial is priced (energy_uj is always logged); a latency model only when its metric is used
    needs = {"energy": used | {"energy_uj"}, "latency": used & {"modeled_latency_us"}}
    name = cfg.hardware.get("energy", {}).get("name", "the hardware preset") if cfg.get("hardware") else "(none)"
    for section, metrics in needs.items():
        if metrics and not (cfg.get("hardware") and cfg.hardware.get(section)):
            raise ConfigError(
                f"{', '.join(sorted(metrics))}: needs hardware.{section}, which {name} does not define. Pick a "
                "preset that has it (hardware=horowitz_45nm or horowitz_45nm_onchip: conf/hardware/), add the "
                "section to yours, or drop that objective or constraint."
            )


def study_settings(cfg: DictConfig) -> StudySettings:
    """The loop's settings (the ``study`` group), validated before anything is created or evaluated."""
    study = cfg.study
    return StudySettings(
        n_trials=study.n_trials,
        objectives=parse_objectives(OmegaConf.to_container(study.objectives)),  # type: ignore[arg-type]
        max_accuracy_drop=study.max_accuracy_drop,
        max_duplicate_streak=study.max_duplicate_streak,
        max_failure_streak=study.max_failure_streak,
        measure_time=bool(study.measure_time),
        seed_uniform=bool(study.seed_uniform),
        constraints=parse_bounds(list(OmegaConf.to_container(study.constraints)) if study.get("constraints") else []),  # type: ignore[arg-type]
    )


def retrain_settings(cfg: DictConfig, **changes: Any) -> RetrainSettings:
    """The ``retrain`` group (with ``changes`` merged in) as :class:`RetrainSettings`; its ``data`` module built."""
    retrain = OmegaConf.merge(cfg.retrain, changes) if changes else cfg.retrain
    record = {str(k): v for k, v in dict(OmegaConf.to_container(retrain.data, resolve=True)).items()}  # type: ignore[arg-type]
    values = {str(k): v for k, v in dict(OmegaConf.to_container(retrain, resolve=True)).items()}  # type: ignore[arg-type]
    values = {k: v for k, v in values.items() if not k.startswith("_") and k != "data"}
    return RetrainSettings(data=instantiate(retrain.data), data_record=record, **values)


def build_tracker(cfg: DictConfig, **overrides: Any) -> Tracker:
    """The ``tracking`` group's tracker (``tracking=none``: one that records nothing)."""
    return instantiate(cfg.tracking, **overrides) if cfg.tracking else NullTracker()


def build_sampler(sampler_cfg: Any, space: BoundSpace, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The ``sampler`` group's sampler (with ``seed`` if given); a grid gets the bound space."""
    sampler = instantiate(sampler_cfg, seed=seed) if seed is not None else instantiate(sampler_cfg)
    return sampler_for_space(sampler, space)


def hydra_job_number() -> int | None:
    """This job's number in a Hydra multirun (``-m``), if it is one."""
    if not HydraConfig.initialized():
        return None
    num = OmegaConf.select(HydraConfig.get(), "job.num", default=None)  # type: ignore[arg-type]  # multirun only
    return None if num is None else int(num)
