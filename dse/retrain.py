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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import optuna
import torch
import yaml
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from dse.assignment import Assignment, LayerConfig, assignment_key, check_layer_names
from dse.candidate import candidate_evaluator
from dse.cli import run_command
from dse.config_paths import CONFIG_DIR
from dse.exceptions import ConfigError
from dse.search_spaces import SearchSpace
from dse.study.storage import describe_storage
from dse.tracking.mlflow_tracker import MlflowTracker
from dse.training.retraining import DivergenceGuard, RetrainingClassifier
from dse.training.weights import build_trained_model, save_weights
from dse.transform import apply_assignment

__all__ = ["RetrainResult", "load_assignment", "run_retrain"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainResult:
    accuracy_before: float
    accuracy_after: float
    energy_uj: float
    weights: Path
    run_id: str | None


def _trial_assignment(cfg: DictConfig, model: torch.nn.Module) -> tuple[Assignment, dict[str, str]]:
    storage = instantiate(cfg.storage)
    names = optuna.get_all_study_names(storage)
    if cfg.study.name not in names:
        raise ConfigError(
            f"No study {cfg.study.name!r} in {describe_storage(cfg.storage.url)}; studies there: {sorted(names)}. "
            "Pick one with study=<name> (and the storage it lives in)."
        )
    study = optuna.load_study(study_name=cfg.study.name, storage=storage)
    complete = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if cfg.trial not in complete:
        raise ConfigError(
            f"Study {cfg.study.name!r} has no COMPLETE trial {cfg.trial}; its complete trials: {complete}."
        )
    trial = study.trials[int(cfg.trial)]
    space: SearchSpace = instantiate(cfg.space)
    bound = space.bind(model, dict(cfg.model.layer_groups))
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
    r = cfg.retrain
    L.seed_everything(int(r.seed), workers=True)
    candidates = candidate_evaluator(cfg, model)
    needs_ranges = any(c.multiplier or c.activation_format for c in assignment.values())
    ranges = candidates.activation_ranges if needs_ranges else None
    before = candidates.evaluate(assignment, timing=False).metrics
    _logger.info(
        "%s before retraining: top-1 %.4f on %d images", label, before["accuracy"], candidates.evaluator.n_images
    )
    net = apply_assignment(
        model, assignment, ranges, path=cfg.emulation.path, per_channel=cfg.emulation.per_channel, trainable=True
    )
    module = RetrainingClassifier(
        net,
        teacher=model if r.distill > 0 else None,
        distill=float(r.distill),
        temperature=float(r.temperature),
        lr=float(r.lr),
        momentum=float(r.momentum),
        weight_decay=float(r.weight_decay),
        label_smoothing=float(r.label_smoothing),
        warmup_pct=float(r.warmup_pct),
    )
    ckpt_dir = Path(r.ckpt_dir) / label
    last = ckpt_dir / "last.ckpt"
    tracker: MlflowTracker | None = instantiate(cfg.tracking) if cfg.tracking else None
    run_id = None
    if tracker is not None:
        run = tracker.client.create_run(
            tracker.experiment_id, run_name=f"retrain-{label}", tags={"dse_role": "retrain", **tags}
        )
        run_id = run.info.run_id
        tracker.log_metrics(run_id, {"accuracy_before": before["accuracy"], "energy_uj": before["energy_uj"]})
        tracker.log_json(run_id, "assignment.json", {n: c.as_dict() for n, c in assignment.items()})
    trainer = L.Trainer(
        max_epochs=int(r.epochs),
        accelerator=r.accelerator,
        devices=1,
        precision=r.precision,
        callbacks=[
            ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=1, save_on_train_epoch_end=True),
            DivergenceGuard(float(r.lr)),
            _CurveLogger(tracker, run_id),
        ],
        logger=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    datamodule = instantiate(cfg.retrain.data)
    status = "FAILED"
    try:
        resume = str(last) if last.is_file() else None
        _logger.info(
            "Retraining %s for %d epoch(s); checkpoints in %s%s",
            label,
            r.epochs,
            ckpt_dir,
            f" (resuming {last})" if resume else "",
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        after = candidates.evaluator.accuracy(module.net.eval())
        weights = save_weights(module.net.to(memory_format=torch.contiguous_format), ckpt_dir / "retrained.pt")
        if tracker is not None and run_id is not None:
            tracker.log_metrics(run_id, {"accuracy_after": after.acc_top1, "accuracy_top5_after": after.acc_top5})
            tracker.client.log_artifact(run_id, str(weights))
        status = "FINISHED"
    finally:
        if tracker is not None and run_id is not None:
            tracker.client.set_terminated(run_id, status=status)
    _logger.info(
        "%s: top-1 %.4f -> %.4f (%s); weights %s",
        label,
        before["accuracy"],
        after.acc_top1,
        assignment_key(assignment)[:80],
        weights,
    )
    return RetrainResult(before["accuracy"], after.acc_top1, before["energy_uj"], weights, run_id)


class _CurveLogger(L.Callback):
    """Training loss and accuracy per epoch to the retraining's MLflow run (its learning curves)."""

    def __init__(self, tracker: MlflowTracker | None, run_id: str | None) -> None:
        self.tracker, self.run_id = tracker, run_id

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.tracker is None or self.run_id is None:
            return
        metrics: dict[str, Any] = {k.replace("/", "_"): float(v) for k, v in trainer.callback_metrics.items()}
        self.tracker.log_metrics(self.run_id, metrics, step=trainer.current_epoch)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="retraining")
def main(cfg: DictConfig) -> None:
    run_command(run_retrain, cfg)


if __name__ == "__main__":
    main()
