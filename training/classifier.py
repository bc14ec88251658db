"""The LightningModule that trains and evaluates every classifier in dse.

The network is passed in (``save_hyperparameters(ignore=["net"])``), so the
same module trains a baseline, evaluates a search candidate, and retrains an
approximate model. ``forward`` is inference; the ``*_step`` methods are loops.
"""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["ImageClassifier", "in_layout"]


def in_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in NHWC when asked and it is a batch of images; a batch of sequences (3-d) stays as it is."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


class ImageClassifier(L.LightningModule):
    """Cross-entropy classifier with top-1/top-5 accuracy and one-cycle SGD.

    Args:
        net: the network (its ``state_dict`` is what gets shipped).
        num_classes: number of classes.
        lr: peak learning rate of the one-cycle schedule.
        momentum: SGD (Nesterov) momentum.
        weight_decay: L2 on conv/linear weights; batch-norm and biases are not decayed.
        label_smoothing: cross-entropy label smoothing while training.
        warmup_pct: fraction of the steps spent warming up.
        channels_last: run convolutions in NHWC (faster on CPU and on tensor cores).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 10,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        label_smoothing: float = 0.1,
        warmup_pct: float = 0.15,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.channels_last = channels_last
        self.top1 = nn.ModuleDict(
            {s: MulticlassAccuracy(num_classes, top_k=1, average="micro") for s in ("val", "test")}
        )
        self.top5 = nn.ModuleDict(
            {s: MulticlassAccuracy(num_classes, top_k=5, average="micro") for s in ("val", "test")}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(in_layout(x, self.channels_last))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams["label_smoothing"])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)
        return loss

    def _eval_step(self, batch: Any, stage: str) -> None:
        x, y = batch
        logits = self(x).float()
        top1, top5 = cast(Metric, self.top1[stage]), cast(Metric, self.top5[stage])
        top1(logits, y)
        top5(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), batch_size=len(y))
        self.log(f"{stage}/acc_top1", top1, prog_bar=True, batch_size=len(y))
        self.log(f"{stage}/acc_top5", top5, batch_size=len(y))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image correctness (top-1, top-5) of a batch: what every accuracy dse reports is counted from,
        so that two models are compared image by image (paired tests) and a slice can be evaluated alone."""
        x, y = batch
        logits = self(x)
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        return (best[:, 0] == y).cpu(), (best == y[:, None]).any(dim=1).cpu()

    def configure_optimizers(self) -> Any:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in self.net.parameters():
            (decay if p.ndim > 1 else no_decay).append(p)  # BN weights/biases are 1-D
        optimizer = torch.optim.SGD(
            [
                {"params": decay, "weight_decay": self.hparams["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams["lr"],
            momentum=self.hparams["momentum"],
            nesterov=True,
        )
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.hparams["lr"],
            total_steps=int(self.trainer.estimated_stepping_batches),
            pct_start=self.hparams["warmup_pct"],
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
