"""Retraining one candidate (an assignment of the trained model) with its approximation in the forward pass.

What ``python -m dse.retrain`` and the search's ``retrain.enabled`` share: build the trainable
candidate (``apply_assignment(trainable=True)``), choose each emulated layer's training forward
(bit-exact, or the fitted error model of :mod:`dse.emulation.error_model`), fine-tune it with
Lightning (checkpoints make a re-run resume), evaluate it bit-exactly on the candidate
evaluator's set, and log all of it to an MLflow run of its own. The exact model is never
modified: the candidate is a copy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from dse.assignment import Assignment, needs_activation_ranges
from dse.candidates.accuracy_statistics import pack_correct
from dse.candidates.evaluator import CandidateEvaluator
from dse.candidates.transform import apply_assignment, recalibrate
from dse.emulation import use_error_model
from dse.exceptions import ConfigError, DataError
from dse.tracking.tracker import NullTracker, Tracker
from dse.training.retraining_module import DivergenceGuard, ErrorModelRefit, RetrainingClassifier
from dse.training.weights import save_weights
from dse.worker.process import single_process

__all__ = ["RetrainResult", "RetrainSettings", "check_training_data", "retrain_candidate"]

_logger = logging.getLogger(__name__)
_SEARCH_ONLY = ("enabled", "on", "max_drop_before", "ckpt_dir")  # not what decides a retraining's result
_FORWARDS = ("auto", "bit_exact", "error_model")
_RESULT = "result.json"  # written last: its presence means "finished", with the settings it finished with


@dataclass(frozen=True)
class RetrainSettings:
    """How a candidate is retrained: the ``retrain`` config group (``conf/retrain/default.yaml``, which
    documents each field), built by Hydra.

    ``data`` is the training images' data module (``data@retrain.data``); ``data_record`` is how it was
    configured, kept with a finished retraining so that a re-run with other data is refused.
    ``enabled``, ``on`` and ``max_drop_before`` say when the search retrains (:mod:`dse.study.search_retraining`).
    """

    data: L.LightningDataModule | None = None
    data_record: dict[str, Any] = field(default_factory=dict)
    enabled: bool = False
    on: str = "front"
    max_drop_before: float | None = None
    epochs: int = 1
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5.0e-5
    label_smoothing: float = 0.0
    warmup_pct: float = 0.1
    distill: float = 0.0
    temperature: float = 4.0
    accelerator: str = "auto"
    precision: str = "32-true"
    seed: int = 0
    forward: str = "auto"
    error_model_refit_every: int = 50
    recalibrate: bool = False
    ckpt_dir: str = "checkpoints/retrain"

    def __post_init__(self) -> None:
        if self.on not in ("front", "each"):
            raise ConfigError(f"retrain.on={self.on!r}: choose front (the Pareto trials after the budget) or each.")
        if self.forward not in _FORWARDS:
            raise ConfigError(f"retrain.forward={self.forward!r}: choose one of {', '.join(_FORWARDS)}.")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"retrain.epochs={self.epochs!r} must be a whole number >= 1.")
        if not 0.0 <= float(self.distill) <= 1.0:
            raise ConfigError(f"retrain.distill={self.distill!r} is a weight in [0, 1] (0 = no distillation).")

    def decisive(self) -> dict[str, Any]:
        """The settings that decide a retraining's result (kept with it: a re-run with others is refused)."""
        values = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("data", "data_record")
        }
        return {**{k: v for k, v in values.items() if k not in _SEARCH_ONLY}, "data": self.data_record}


@dataclass(frozen=True)
class RetrainResult:
    """Before/after accuracy (bit-exact, on the candidate evaluator's images) and how it was reached."""

    accuracy_before: float
    accuracy_after: float
    accuracy_top5_after: float
    energy_uj: float
    training_forward: str  # bit_exact | error_model | mixed: how the emulated layers trained
    error_model_layers: int
    epochs: int
    wall_time_s: float
    weights: Path
    run_id: str | None
    accuracy_recalibrated: float | None = None  # after re-measuring activation ranges (retrain.recalibrate)
    correct_after: str | None = None  # per-image correctness after (pack_correct): paired tests against it

    def summary(self) -> str:
        """One line for the log: before, after, time and how it trained."""
        line = (
            f"top-1 {self.accuracy_before:.4f} -> {self.accuracy_after:.4f} in {self.wall_time_s:.0f} s "
            f"({self.training_forward} training forward)"
        )
        if self.accuracy_recalibrated is not None:
            line += f"; with activation ranges re-calibrated after: {self.accuracy_recalibrated:.4f}"
        return line

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (study user attributes, ``result.json``); the per-image correctness stays out (bulky)."""
        return {**{k: v for k, v in asdict(self).items() if k != "correct_after"}, "weights": str(self.weights)}


_HOW_TO_SET_THE_DATA = (
    "Retraining takes its images from data@retrain.data, not from the search's data: "
    "data@retrain.data=cifar10_npz retrain.data.path=/path/cifar10.npz, or data@retrain.data=cifar10_torchvision."
)


def check_training_data(retrain: RetrainSettings) -> None:
    """Load the retraining images now (Lightning's prepare_data, then setup), so that missing or test-only
    data is refused with the right override before anything is evaluated or recorded."""
    if retrain.data is None:
        raise ConfigError(f"Retraining needs training images. {_HOW_TO_SET_THE_DATA}")
    try:
        retrain.data.prepare_data()
        retrain.data.setup("fit")
    except DataError as exc:
        raise DataError(f"{exc} {_HOW_TO_SET_THE_DATA}") from None


def retrain_candidate(
    model: torch.nn.Module,
    assignment: Assignment,
    candidates: CandidateEvaluator,
    retrain: RetrainSettings,
    label: str,
    tracker: Tracker | None = None,
    tags: dict[str, str] | None = None,
    before: dict[str, float] | None = None,
) -> RetrainResult:
    """Fine-tune ``assignment`` applied to ``model`` as ``retrain`` says.

    ``before``: the candidate's metrics if already measured (a search trial's), else evaluated here.
    Checkpoints go to ``retrain.ckpt_dir/label``; a re-run with the same label resumes from ``last.ckpt``,
    or, if that retraining finished with the same settings, returns its stored result at once.
    A diverging run raises :class:`dse.training.retraining_module.RetrainingDiverged` and is FAILED in MLflow.
    """
    check_training_data(retrain)  # before any evaluation, checkpoint or MLflow run
    tracker = tracker if tracker is not None else NullTracker()
    ckpt_dir = Path(retrain.ckpt_dir) / label
    settings = retrain.decisive()  # what decides the result (not where it is kept, nor when the search asks for it)
    finished = _finished(ckpt_dir, settings)
    if finished is not None:
        _logger.info("%s was retrained already (%s): %s", label, ckpt_dir, finished.summary())
        return finished
    start = time.perf_counter()
    L.seed_everything(int(retrain.seed), workers=True)
    if before is None:
        before = candidates.evaluate(assignment, timing=False).metrics
    _logger.info(
        "%s before retraining: top-1 %.4f on %d images", label, before["accuracy"], candidates.evaluator.n_images
    )
    module, forward, modeled = _trainable(model, assignment, candidates, retrain)
    run_id = _start_run(tracker, label, forward, modeled, settings, tags, before, assignment)
    status = "FAILED"
    try:
        _fit(module, retrain, ckpt_dir, label, forward, [_CurveLogger(tracker, run_id)], refit=bool(modeled))
        reached = {"training_forward": forward, "error_model_layers": len(modeled), "run_id": run_id or None}
        result = _measure_retrained(module, candidates, retrain, assignment, ckpt_dir, before, reached, start)
        _log_result(tracker, run_id, result)
        (ckpt_dir / _RESULT).write_text(json.dumps({"settings": settings, "result": result.as_dict()}, indent=2))
        status = "FINISHED"
    finally:
        tracker.end_run(run_id, status=status)
    _logger.info("%s: %s", label, result.summary())
    return result


def _trainable(
    model: torch.nn.Module, assignment: Assignment, candidates: CandidateEvaluator, r: RetrainSettings
) -> tuple[RetrainingClassifier, str, list[str]]:
    """The candidate as a trainable module; its training forward (bit_exact | error_model | mixed) and the
    layers on the error model."""
    ranges = candidates.activation_ranges if needs_activation_ranges(assignment) else None
    net = apply_assignment(
        model, assignment, ranges, path=candidates.emulation_path, per_channel=candidates.per_channel, trainable=True
    )
    modeled = use_error_model(net, str(r.forward))
    n_emulated = sum(1 for c in assignment.values() if c.multiplier)
    forward = "bit_exact" if not modeled else ("error_model" if len(modeled) == n_emulated else "mixed")
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
    return module, forward, modeled


def _start_run(
    tracker: Tracker,
    label: str,
    forward: str,
    modeled: list[str],
    settings: dict[str, Any],
    tags: dict[str, str] | None,
    before: dict[str, float],
    assignment: Assignment,
) -> str:
    """The retraining's tracked run (``""`` untracked); a run of this label left RUNNING is closed KILLED."""
    run_tags = {"dse_role": "retrain", "dse_retrain_label": label, "dse_training_forward": forward, **(tags or {})}
    # a run of this label still RUNNING was killed (one retraining per checkpoint folder at a time)
    dead = tracker.kill_running_runs("dse_retrain_label", label)
    if dead:
        run_tags["dse_resumes_run"] = dead[0]
    params: dict[str, object] = {"retrain." + k: v for k, v in settings.items() if k != "data"}
    params.update(training_forward=forward, error_model_layers=len(modeled))
    run_id = tracker.start_run(f"retrain-{label}", run_tags, params)
    tracker.log_metrics(run_id, {"accuracy_before": before["accuracy"], "energy_uj": before["energy_uj"]})
    tracker.log_json(run_id, "assignment.json", {n: c.as_dict() for n, c in assignment.items()})
    return run_id


def _fit(
    module: RetrainingClassifier,
    r: RetrainSettings,
    ckpt_dir: Path,
    label: str,
    forward: str,
    callbacks: list[L.Callback],
    refit: bool,
) -> None:
    """Train ``module`` for ``r.epochs`` on ``r.data``, resuming from ``ckpt_dir/last.ckpt`` if there."""
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=1, save_on_train_epoch_end=True),
        DivergenceGuard(float(r.lr)),
        *callbacks,
    ]
    if refit:
        callbacks.append(ErrorModelRefit(int(r.error_model_refit_every)))
    trainer = L.Trainer(
        max_epochs=int(r.epochs),
        accelerator=r.accelerator,
        devices=1,
        plugins=[single_process()],
        precision=r.precision,  # type: ignore[arg-type]  # validated by Lightning
        callbacks=callbacks,
        logger=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if last.is_file() else None
    _logger.info(
        "Retraining %s for %d epoch(s), training forward %s; checkpoints in %s%s",
        label,
        r.epochs,
        forward,
        ckpt_dir,
        f" (resuming {last})" if resume else "",
    )
    trainer.fit(module, datamodule=r.data, ckpt_path=resume)


def _measure_retrained(
    module: RetrainingClassifier,
    candidates: CandidateEvaluator,
    retrain: RetrainSettings,
    assignment: Assignment,
    ckpt_dir: Path,
    before: dict[str, float],
    reached: dict[str, Any],
    start: float,
) -> RetrainResult:
    """The retrained network's bit-exact accuracy (and, with ``recalibrate``, after re-measuring its activation
    ranges), its weights saved, beside ``before`` and how it was ``reached`` (forward, error-model layers, run)."""
    top1, top5 = candidates.evaluator.correct(module.net.eval())  # bit-exact: no autograd here
    weights = save_weights(module.net.to(memory_format=torch.contiguous_format), ckpt_dir / "retrained.pt")
    recalibrated = None
    if retrain.recalibrate and needs_activation_ranges(assignment):
        recalibrate(module.net, candidates.evaluator.calibration_batches())
        recalibrated = candidates.evaluator.accuracy(module.net.eval()).acc_top1
    return RetrainResult(
        accuracy_before=before["accuracy"],
        accuracy_after=int(top1.sum()) / len(top1),
        accuracy_top5_after=int(top5.sum()) / len(top5),
        correct_after=pack_correct(top1),
        energy_uj=before["energy_uj"],
        epochs=int(retrain.epochs),
        wall_time_s=time.perf_counter() - start,
        weights=weights,
        accuracy_recalibrated=recalibrated,
        **reached,
    )


def _log_result(tracker: Tracker, run_id: str, result: RetrainResult) -> None:
    metrics = {
        "accuracy_after": result.accuracy_after,
        "accuracy_top5_after": result.accuracy_top5_after,
        "retrain_wall_time_s": result.wall_time_s,
    }
    if result.accuracy_recalibrated is not None:
        metrics["accuracy_recalibrated"] = result.accuracy_recalibrated
    tracker.log_metrics(run_id, metrics)
    tracker.log_file(run_id, result.weights)


def _finished(ckpt_dir: Path, settings: dict[str, Any]) -> RetrainResult | None:
    """The result of a retraining that finished in ``ckpt_dir`` with the same settings, if any."""
    path = ckpt_dir / _RESULT
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    if stored["settings"] != settings:
        changed = sorted(
            k for k in settings.keys() | stored["settings"].keys() if settings.get(k) != stored["settings"].get(k)
        )
        raise ConfigError(
            f"{ckpt_dir} holds a finished retraining of this candidate with other settings ({', '.join(changed)}). "
            "Delete that folder to retrain anew, or give another retrain.ckpt_dir."
        )
    return RetrainResult(**{**stored["result"], "weights": Path(stored["result"]["weights"])})


class _CurveLogger(L.Callback):
    """Training loss and accuracy per epoch to the retraining's MLflow run (its learning curves)."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics: dict[str, Any] = {k.replace("/", "_"): float(v) for k, v in trainer.callback_metrics.items()}
        self.tracker.log_metrics(self.run_id, metrics, step=trainer.current_epoch)
