"""CIFAR-10 as a Lightning data module, from any of three sources.

- ``npz``: a shipped name (``cifar10_test_subset``) or an ``.npz`` with
  ``x_train/y_train/x_test/y_test`` (uint8 HWC, RGB), the layout of the evaluation subset shipped with dse;
  a file with only ``x_test/y_test`` serves evaluation only.
- ``torchvision``: torchvision's CIFAR10 under ``root``, downloaded in
  ``prepare_data`` when ``download=True``.

Training holds out ``val_size`` images of the *training* set (stratified,
seeded) for validation. The test set is cut in two fixed, disjoint, stratified
halves (:func:`half_of_test_set`): a search picks configurations on the ``search``
half and reports them on the ``held_out`` half, so no image that chose a
configuration reports its accuracy. Activation ranges are calibrated on
*training* images (:meth:`CIFAR10DataModule.calibration_images`), as in
post-training quantization.
Batches stay uint8 until they reach the device; ``on_after_batch_transfer``
converts, augments (training only) and normalises there, so the same code is
fast on CPU and GPU. Evaluation loaders never shuffle or drop samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import TensorDataset

from dse.exceptions import DataError
from dse.training.assets import resolve_asset
from dse.training.tensor_data import TensorDataModule

__all__ = [
    "CALIBRATION_POOL",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10Arrays",
    "CIFAR10DataModule",
    "TestSplit",
    "half_of_test_set",
    "load_cifar10",
    "stratified_subset",
    "within_class_rank",
]

_logger = logging.getLogger(__name__)

# Official CIFAR-10 training-set channel statistics (on [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Which test images a data module serves: all of them, or one of the two halves of half_of_test_set.
TestSplit = Literal["all", "search", "held_out"]


@dataclass(frozen=True)
class CIFAR10Arrays:
    """uint8 NHWC images and int64 labels; ``x_train`` is None for eval-only files.

    ``test_class_ranks``: each test image's position among its class's test images in the *official*
    order (which decides its half, :func:`half_of_test_set`); ``x_calibration``: training images that an
    eval-only file carries for activation-range calibration.
    """

    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    test_class_ranks: np.ndarray | None = None
    x_calibration: np.ndarray | None = None


def within_class_rank(labels: np.ndarray) -> np.ndarray:
    """Each sample's position among the samples of its class, in array order.

    The same for the official test order (torchvision) and the class-major offline copy, which keeps
    the official order within each class.

    >>> within_class_rank(np.array([3, 1, 3, 3, 1])).tolist()
    [0, 0, 1, 2, 1]
    """
    ranks = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        ranks[members] = np.arange(len(members))
    return ranks


def half_of_test_set(class_ranks: np.ndarray, split: TestSplit) -> np.ndarray:
    """Indices of one fixed half of the test set: ``search`` the images of even within-class rank,
    ``held_out`` those of odd rank (500 of each class each for CIFAR-10), ``all`` every image.

    A rule on the official order, not a seeded draw: any copy of CIFAR-10 in official or class-major
    order cuts into the same two halves, and they never overlap.

    >>> half_of_test_set(np.array([0, 1, 2, 0, 1]), "held_out").tolist()
    [1, 4]
    """
    if split == "all":
        return np.arange(len(class_ranks))
    if split not in ("search", "held_out"):
        raise DataError(f"Unknown test split {split!r}; use 'search', 'held_out' or 'all'.")
    return np.flatnonzero(class_ranks % 2 == (0 if split == "search" else 1))


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
            y_test = _integer_labels(d["y_test"], path, "y_test")
            arrays = CIFAR10Arrays(
                x_test=d["x_test"],
                y_test=y_test,
                x_train=d.get("x_train", None),
                y_train=_integer_labels(d["y_train"], path, "y_train") if "y_train" in d else None,
                # a subset file says where its images sit in the official order; a full copy is in it
                test_class_ranks=d["test_class_ranks"] if "test_class_ranks" in d else within_class_rank(y_test),
                x_calibration=d.get("x_calibration", None),
            )
    except (OSError, ValueError) as exc:  # zip/pickle errors of a corrupt file
        raise DataError(f"Cannot read CIFAR-10 file {str(path)!r}: {exc}. Re-create or re-download it.") from exc
    if arrays.x_test.shape[1:] != (32, 32, 3) or arrays.x_test.dtype != np.uint8:
        raise DataError(
            f"{str(path)!r}: x_test has shape {arrays.x_test.shape} and dtype {arrays.x_test.dtype}; "
            "expected uint8 (N, 32, 32, 3) RGB images."
        )
    for images, labels, split in ((arrays.x_test, arrays.y_test, "test"), (arrays.x_train, arrays.y_train, "train")):
        _check_labels(path, images, labels, split)
    return arrays


def _integer_labels(labels: np.ndarray, path: Path, key: str) -> np.ndarray:
    if not np.issubdtype(labels.dtype, np.integer):  # floats would be truncated silently (2.9 -> 2)
        raise DataError(f"{str(path)!r}: {key} has dtype {labels.dtype}; labels must be integers 0..9.")
    return labels.astype(np.int64)


def _check_labels(path: Path, images: np.ndarray | None, labels: np.ndarray | None, split: str) -> None:
    """One label per image, each a class index 0..9: anything else would score silently wrong (0%, or fewer images)."""
    if labels is None:
        return
    if images is not None and len(labels) != len(images):
        raise DataError(
            f"{str(path)!r}: y_{split} holds {len(labels)} labels for {len(images)} images in x_{split}; "
            "give exactly one label per image."
        )
    bad = labels[(labels < 0) | (labels > 9)]
    if len(bad):
        raise DataError(
            f"{str(path)!r}: y_{split} has labels outside 0..9 (e.g. {sorted(set(bad.tolist()))[:5]}, "
            f"{len(bad)} of {len(labels)}); CIFAR-10 labels are class indices 0..9 (airplane..truck)."
        )


def _load_torchvision(root: Path, download: bool) -> CIFAR10Arrays:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except (RuntimeError, OSError) as exc:  # "Dataset not found or corrupted", or no network for the download
        fix = (
            "the download failed: check the network access (or fetch cifar-10-python.tar.gz into that folder)"
            if download
            else "set download: true in the data config that names this folder (e.g. data.download=true), "
            "with network access"
        )
        raise DataError(
            f"torchvision CIFAR-10 not found under {str(root)!r} ({exc}): {fix}; or use a local .npz "
            "(cifar10_npz with its path)."
        ) from exc
    y_test = np.asarray(test.targets, dtype=np.int64)
    return CIFAR10Arrays(
        x_test=np.asarray(test.data),
        y_test=y_test,
        x_train=np.asarray(train.data),
        y_train=np.asarray(train.targets, dtype=np.int64),
        test_class_ranks=within_class_rank(y_test),
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


# Training images kept for calibration (a seeded pick made at setup): more than any calibration asks for
# (256 by default), and 12 MB instead of the 150 MB of all 50,000 kept alive for it.
CALIBRATION_POOL = 4096


def _calibration_pool(arrays: CIFAR10Arrays, seed: int) -> np.ndarray | None:
    """The file's own calibration images, else a seeded pick of at most CALIBRATION_POOL training images."""
    if arrays.x_calibration is not None or arrays.x_train is None:
        return arrays.x_calibration
    if len(arrays.x_train) <= CALIBRATION_POOL:
        return arrays.x_train
    pick = np.sort(np.random.default_rng(seed).permutation(len(arrays.x_train))[:CALIBRATION_POOL])
    return np.ascontiguousarray(arrays.x_train[pick])


class CIFAR10DataModule(TensorDataModule):
    """CIFAR-10 train/test loaders; ``test_split`` picks a half of the test set and ``test_subset`` a
    stratified, seeded subset of it.

    Args:
        source: ``"npz"`` or ``"torchvision"``.
        path: the ``.npz`` file, or torchvision's root folder.
        download: let torchvision download into ``path`` (``prepare_data``).
        batch_size: training batch size.
        eval_batch_size: batch size of validation/test loaders (never drops samples).
        test_split: ``"search"`` or ``"held_out"`` (the two disjoint halves of :func:`half_of_test_set`), or
            ``"all"`` test images.
        test_subset: number of test images to keep of that split (multiple of 10), or None for all.
        subset_seed: seed of the stratified test subset and of the validation split.
        val_size: training images held out for validation (stratified; multiple of 10; 0 = none,
            then training uses all training images and runs no validation).
        train_subset: train on this many of the remaining training images (stratified, seeded;
            a multiple of 10), or None for all of them.
        augment: random crop (pad 4) and horizontal flip while training.
        num_workers: DataLoader workers.
    """

    # the splits setup() builds (declared here too: type checkers do not follow dse.training to training/)
    _train: TensorDataset | None
    _val: TensorDataset | None
    _test: TensorDataset | None

    def __init__(
        self,
        source: Literal["npz", "torchvision"] = "npz",
        path: str = "cifar10.npz",
        download: bool = False,
        batch_size: int = 128,
        eval_batch_size: int = 250,
        test_subset: int | None = None,
        subset_seed: int = 0,
        test_split: TestSplit = "all",
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
        self.test_split = test_split
        self.val_size = val_size
        self.train_subset = train_subset
        self.augment = augment
        self.num_workers = num_workers
        self.test_indices: np.ndarray | None = None
        self.val_indices: np.ndarray | None = None
        self._calibration_pool: np.ndarray | None = None

    def prepare_data(self) -> None:
        if self.source == "torchvision" and self.download:
            load_cifar10("torchvision", self.path, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self._test is not None and (stage != "fit" or self._train is not None):
            return
        arrays = load_cifar10(self.source, self.path)
        assert arrays.test_class_ranks is not None
        half = half_of_test_set(arrays.test_class_ranks, self.test_split)
        if not len(half):
            raise DataError(
                f"{self.path!r} holds no image of the {self.test_split!r} half of the test set (the shipped "
                "subset holds search images only). For held-out images use the full test set: "
                "data=cifar10_torchvision, or data=cifar10_npz data.path=/path/cifar10.npz."
            )
        self.test_indices = (
            half
            if self.test_subset is None
            else half[stratified_subset(arrays.y_test[half], self.test_subset, self.subset_seed)]
        )
        self._calibration_pool = _calibration_pool(arrays, self.subset_seed)
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
        _logger.info(
            "CIFAR-10 from %s (%s): %d test images (%s)", self.path, self.source, len(self._test), self.test_split
        )

    def calibration_images(self, count: int, seed: int) -> torch.Tensor | None:
        """``count`` training images (a seeded pick from the calibration pool), uint8 NCHW, for
        activation-range calibration; None when the file holds no training image."""
        if self._calibration_pool is None:
            return None
        pool = self._calibration_pool
        pick = np.sort(np.random.default_rng(seed).permutation(len(pool))[: min(count, len(pool))])
        return torch.from_numpy(np.ascontiguousarray(pool[pick])).permute(0, 3, 1, 2).contiguous()

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
