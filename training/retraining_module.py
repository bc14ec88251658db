"""Approximate retraining: fine-tune a candidate with its approximation in the forward pass.

The network is the candidate itself (``dse.candidates.transform.apply_assignment(..., trainable=True)``):
its emulated layers compute the bit-exact approximate forward and pass straight-through
gradients (the exact operation's, at the quantized operands); decimal places and formats
are re-applied to the weights at every step; weight scales follow the weights, activation
ranges stay frozen at their calibration; batch norm statistics are updated. Optionally the
exact baseline is a teacher (knowledge distillation on its logits).

Layers whose bit-exact forward is slow to train with can train through a fitted error model
instead (:mod:`dse.emulation.error_model`, refitted by :class:`ErrorModelRefit`); evaluation
stays bit-exact either way.

Why frozen activation ranges: the search scored the candidate with ranges calibrated on the
exact model, and a deployed accelerator has fixed scales; keeping them makes the retrained
model the same hardware configuration. Re-calibrating after retraining
(``retrain.recalibrate=true``) is measured against it and reported beside it.
"""

from __future__ import annotations

import math
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from dse.emulation import fit_error_models, training_memory_format
from dse.exceptions import DSEError
from dse.training.classifier import ImageClassifier, in_layout

__all__ = ["DivergenceGuard", "ErrorModelRefit", "RetrainingClassifier", "RetrainingDiverged"]


class RetrainingDiverged(DSEError):
    """The training loss stopped being finite."""


class RetrainingClassifier(ImageClassifier):
    """:class:`ImageClassifier` with an optional frozen teacher.

    Args:
        net: the candidate (trainable assignment applied).
        teacher: the exact model whose logits the candidate also learns, or None.
        distill: weight of the distillation term (0..1): ``(1 - distill) CE + distill T^2 KL``.
        temperature: softmax temperature T of the distillation term.
        **kwargs: :class:`ImageClassifier`'s optimisation arguments.
    """

    def __init__(
        self,
        net: nn.Module,
        teacher: nn.Module | None = None,
        distill: float = 0.0,
        temperature: float = 4.0,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= distill <= 1.0:
            raise ValueError(f"retrain.distill must be in [0, 1], got {distill}.")
        if distill > 0 and teacher is None:
            raise ValueError("retrain.distill > 0 needs a teacher (the exact model).")
        kwargs.setdefault("channels_last", training_memory_format(net) == torch.channels_last)
        super().__init__(net.train(), **kwargs)  # Lightning keeps each module's mode: BN must train
        self.distill, self.temperature = distill, temperature
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None and distill > 0 else []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if not self._teacher:
            return super().training_step(batch, batch_idx)
        x, y = batch
        logits = self(x)
        with torch.no_grad():
            teacher = self._teacher[0].to(x.device)(in_layout(x, True))
        t = self.temperature
        kd = (
            F.kl_div(
                F.log_softmax(logits / t, dim=1),
                F.log_softmax(teacher / t, dim=1),
                log_target=True,
                reduction="batchmean",
            )
            * t
            * t
        )
        loss = (1 - self.distill) * F.cross_entropy(logits, y, label_smoothing=self.hparams["label_smoothing"])
        loss = loss + self.distill * kd
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)
        return loss


class DivergenceGuard(L.Callback):
    """Stop at the first non-finite training loss, with a message that says what to change."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise RetrainingDiverged(
                f"Retraining diverged at step {trainer.global_step}: the loss is {float(loss)}. Lower retrain.lr "
                f"(now {self.lr}); nothing of the study or of the baseline weights was changed."
            )


class ErrorModelRefit(L.Callback):
    """Refit the error-model layers on the current training batch every ``every`` steps (and at
    the first step of each epoch): the weights move, and so does each layer's error."""

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"retrain.error_model_refit_every must be >= 1, got {every}.")
        self.every = every

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0 or trainer.global_step % self.every == 0:
            net = getattr(pl_module, "net", pl_module)
            x = batch[0]
            channels_last = getattr(pl_module, "channels_last", False)
            fit_error_models(cast(nn.Module, net), in_layout(x, channels_last))
