"""Train a baseline classifier: ``python -m dse.training.train model=... data=...``.

Resumable: a checkpoint is written every epoch to ``ckpt_dir``; re-running the
same command continues from ``last.ckpt``. At the end the network's
``state_dict`` is exported to ``export_path`` and evaluated on the full test set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from dse.cli import run_command, writable_run_dir
from dse.config_paths import CONFIG_DIR
from dse.training.classifier import ImageClassifier
from dse.training.weights import load_weights, save_weights

_logger = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train ``cfg.model`` on ``cfg.data``; return the final test metrics."""
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    net = instantiate(cfg.model.builder)
    ckpt_dir = Path(cfg.ckpt_dir)
    last = ckpt_dir / "last.ckpt"
    if cfg.get("init_weights") and not last.is_file():
        # A second cycle from trained weights (warm restart); a resumed run already has them.
        load_weights(net, cfg.init_weights)
        _logger.info("Starting from the weights %s", cfg.init_weights)
    # the metrics' class count follows the model's (JapaneseVowels: 9), unless optim sets it
    module = ImageClassifier(net, **{"num_classes": int(cfg.model.builder.get("num_classes", 10)), **cfg.optim})
    datamodule = instantiate(cfg.data, test_subset=None)
    # save_top_k=1 without a monitor keeps the newest epoch; saving at train-epoch end
    # makes every epoch resumable even when validation runs less often.
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, save_last=True, save_top_k=1, every_n_epochs=1, save_on_train_epoch_end=True
    )
    trainer = L.Trainer(
        **cfg.trainer,
        callbacks=[checkpoint, LearningRateMonitor("epoch")],
        logger=CSVLogger(str(ckpt_dir), name="logs"),
    )
    resume = str(last) if last.is_file() else None
    _logger.info("Training %s; checkpoints in %s%s", cfg.model.name, ckpt_dir, f" (resuming {last})" if resume else "")
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    metrics = trainer.test(module, datamodule=datamodule)[0]
    if cfg.get("export_path"):
        path = save_weights(module.net.to(memory_format=torch.contiguous_format), cfg.export_path)
        _logger.info("Exported weights to %s: %s", path, metrics)
    return {k: float(v) for k, v in metrics.items()}


@writable_run_dir
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    run_command(train, cfg, quiet=False)


if __name__ == "__main__":
    main()
