"""CIFAR-10 as a Lightning data module, from any of three sources.

- ``npz``: a shipped name (``cifar10_test_subset``) or an ``.npz`` with
  ``x_train/y_train/x_test/y_test`` (uint8 HWC, RGB), the layout of the evaluation subset shipped with dse;
  a file with only ``x_test/y_test`` serves evaluation only.
- ``torchvision``: torchvision's CIFAR10 under ``root``, downloaded in
  ``prepare_data`` when ``download=True``.

Training holds out ``val_size`` images of the *training* set (stratified,
seeded) for validation; the test set is only for the final number.
Batches stay uint8 until they reach the device; ``on_after_batch_transfer``
converts, augments (training only) and normalises there, so the same code is
fast on CPU and GPU. Evaluation loaders never shuffle or drop samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from dse.exceptions import DataError
from dse.training.assets import resolve_asset

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10Arrays", "CIFAR10DataModule", "load_cifar10", "stratified_subset"]

_logger = logging.getLogger(__name__)

# Official CIFAR-10 training-set channel statistics (on [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class CIFAR10Arrays:
    """uint8 NHWC images and int64 labels; ``x_train`` is None for eval-only files."""

    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None


def _load_npz(path: Path) -> CIFAR10Arrays:
    if not path.is_file():
        raise DataError(
            f"CIFAR-10 file {str(path)!r} does not exist. Point data.path at an .npz with "
            "x_test/y_test (and x_train/y_train to train), or use data=cifar10_torchvision "
            "to download CIFAR-10 with torchvision."
        )
    try:
        with np.load(path) as d:
            if "x_test" not in d or "y_test" not in d:
                raise DataError(
                    f"{str(path)!r} has arrays {sorted(d.files)}, but a CIFAR-10 file needs "
                    "x_test and y_test (uint8 N x 32 x 32 x 3 and int labels)."
                )
            arrays = CIFAR10Arrays(
                x_test=d["x_test"],
                y_test=d["y_test"].astype(np.int64),
                x_train=d.get("x_train", None),
                y_train=d["y_train"].astype(np.int64) if "y_train" in d else None,
            )
    except (OSError, ValueError) as exc:  # zip/pickle errors of a corrupt file
        raise DataError(f"Cannot read CIFAR-10 file {str(path)!r}: {exc}. Re-create or re-download it.") from exc
    if arrays.x_test.shape[1:] != (32, 32, 3) or arrays.x_test.dtype != np.uint8:
        raise DataError(
            f"{str(path)!r}: x_test has shape {arrays.x_test.shape} and dtype {arrays.x_test.dtype}; "
            "expected uint8 (N, 32, 32, 3) RGB images."
        )
    return arrays


def _load_torchvision(root: Path, download: bool) -> CIFAR10Arrays:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except (RuntimeError, OSError) as exc:  # "Dataset not found or corrupted", or no network for the download
        raise DataError(
            f"torchvision CIFAR-10 not found under {str(root)!r} ({exc}). Set data.download=true "
            "with network access, or point data= at a local .npz (data=cifar10_npz data.path=...)."
        ) from exc
    return CIFAR10Arrays(
        x_test=np.asarray(test.data),
        y_test=np.asarray(test.targets, dtype=np.int64),
        x_train=np.asarray(train.data),
        y_train=np.asarray(train.targets, dtype=np.int64),
    )


def load_cifar10(
    source: Literal["npz", "torchvision"], path: str | Path | None, download: bool = False
) -> CIFAR10Arrays:
    """Load CIFAR-10 arrays from an ``.npz`` file or a torchvision root folder."""
    if path is None or str(path) in ("", "None"):
        raise DataError(
            "No CIFAR-10 location is set (data.path is null). Give one: data.path=/path/to/cifar10.npz "
            "(or the environment variable DSE_CIFAR10_NPZ), or data=cifar10_torchvision to download it "
            "with torchvision into ~/.cache/dse/cifar10."
        )
    if source == "npz":
        return _load_npz(resolve_asset(path))
    if source == "torchvision":
        return _load_torchvision(Path(path).expanduser(), download)
    raise DataError(f"Unknown CIFAR-10 source {source!r}; use 'npz' or 'torchvision'.")


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset with ``size // n_classes`` samples of each class, sorted.

    >>> y = np.repeat(np.arange(10), 100)  # class-major, like the offline test set
    >>> idx = stratified_subset(y, 50, seed=0)
    >>> np.bincount(y[idx]).tolist()
    [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    """
    classes = np.unique(labels)
    per_class = size // len(classes)
    if per_class < 1 or size % len(classes):
        raise DataError(f"Subset size {size} must be a positive multiple of the {len(classes)} classes.")
    rng = np.random.default_rng(seed)
    picks = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise DataError(f"Subset size {size} needs {per_class} images of class {c}, only {len(members)} exist.")
        picks.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def _to_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
    return TensorDataset(images, torch.from_numpy(y))


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 train/test loaders; ``test_subset`` picks a stratified, seeded subset.

    Args:
        source: ``"npz"`` or ``"torchvision"``.
        path: the ``.npz`` file, or torchvision's root folder.
        download: let torchvision download into ``path`` (``prepare_data``).
        batch_size: training batch size.
        eval_batch_size: batch size of validation/test loaders (never drops samples).
        test_subset: number of test images to keep (multiple of 10), or None for all.
        subset_seed: seed of the stratified test subset and of the validation split.
        val_size: training images held out for validation (stratified; multiple of 10; 0 = none,
            then training uses all training images and runs no validation).
        train_subset: train on this many of the remaining training images (stratified, seeded;
            a multiple of 10), or None for all of them.
        augment: random crop (pad 4) and horizontal flip while training.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        source: Literal["npz", "torchvision"] = "npz",
        path: str = "cifar10.npz",
        download: bool = False,
        batch_size: int = 128,
        eval_batch_size: int = 250,
        test_subset: int | None = None,
        subset_seed: int = 0,
        val_size: int = 5000,
        train_subset: int | None = None,
        augment: bool = True,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.source = source
        self.path = path
        self.download = download
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.test_subset = test_subset
        self.subset_seed = subset_seed
        self.val_size = val_size
        self.train_subset = train_subset
        self.augment = augment
        self.num_workers = num_workers
        self.test_indices: np.ndarray | None = None
        self._train: TensorDataset | None = None
        self._val: TensorDataset | None = None
        self.val_indices: np.ndarray | None = None
        self._test: TensorDataset | None = None

    def prepare_data(self) -> None:
        if self.source == "torchvision" and self.download:
            load_cifar10("torchvision", self.path, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self._test is not None and (stage != "fit" or self._train is not None):
            return
        arrays = load_cifar10(self.source, self.path)
        self.test_indices = (
            np.arange(len(arrays.y_test))
            if self.test_subset is None
            else stratified_subset(arrays.y_test, self.test_subset, self.subset_seed)
        )
        self._test = _to_dataset(arrays.x_test[self.test_indices], arrays.y_test[self.test_indices])
        if stage == "fit":
            if arrays.x_train is None or arrays.y_train is None:
                raise DataError(
                    f"{self.path!r} holds test images only; training needs x_train/y_train "
                    "(use the full CIFAR-10 .npz or data=cifar10_torchvision)."
                )
            train = np.ones(len(arrays.y_train), dtype=bool)
            if self.val_size:
                self.val_indices = stratified_subset(arrays.y_train, self.val_size, self.subset_seed)
                train[self.val_indices] = False
                self._val = _to_dataset(arrays.x_train[self.val_indices], arrays.y_train[self.val_indices])
            kept = np.flatnonzero(train)
            if self.train_subset is not None:
                kept = kept[stratified_subset(arrays.y_train[kept], self.train_subset, self.subset_seed + 1)]
            self._train = _to_dataset(arrays.x_train[kept], arrays.y_train[kept])
        _logger.info("CIFAR-10 from %s (%s): %d test images", self.path, self.source, len(self._test))

    def _loader(self, dataset: TensorDataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("Call setup() before asking for a data loader.")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._train, train=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The validation split of the training set (none when ``val_size`` is 0)."""
        return self._loader(self._val, train=False) if self._val is not None else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._test, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._test, train=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        if training and self.augment:
            images = random_crop_flip(images)
        return normalize(images), labels


def random_crop_flip(images: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Per-image random crop of a zero-padded batch and random horizontal flip."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch_idx = torch.arange(n, device=images.device)[:, None, None, None]
    chan_idx = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    out = padded[batch_idx, chan_idx, rows, cols]
    flip = torch.rand(n, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float32 normalised with the official CIFAR-10 statistics."""
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std
