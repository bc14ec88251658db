"""What every dse data module holding its splits as in-memory tensors shares: the four Lightning loaders.

A subclass sets ``_train``, ``_val`` and ``_test`` in ``setup`` (``_val`` may stay None), and has
``batch_size``, ``eval_batch_size`` and ``num_workers``. Training batches are shuffled; evaluation ones keep
the data set's order (dse's evaluator shuffles them itself, seeded).
"""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["TensorDataModule"]


class TensorDataModule(L.LightningDataModule):
    """The loaders of a data module whose splits are ``TensorDataset``s."""

    drop_last_train = True  # a full last batch keeps BatchNorm statistics steady; False for small sets
    batch_size: int
    eval_batch_size: int
    num_workers: int
    _train: TensorDataset | None = None  # set by the subclass's setup()
    _val: TensorDataset | None = None
    _test: TensorDataset | None = None

    def _loader(self, dataset: TensorDataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("Call setup() before asking for a data loader.")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and self.drop_last_train,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._train, train=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The validation split of the training set (none when there is none)."""
        return self._loader(self._val, train=False) if self._val is not None else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._test, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._test, train=False)
