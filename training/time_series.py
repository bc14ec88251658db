"""Time-series classification sets (UCR/UEA) as a Lightning data module, through aeon's own loaders.

- ``name``: a UCR/UEA classification set aeon knows. JapaneseVowels (speaker recognition from 12 LPC
  cepstra, 9 speakers, 270 train / 370 test, 7 to 29 steps) ships inside aeon's package and loads
  offline; any other (SpokenArabicDigits: 13 MFCCs of spoken digits) is downloaded by aeon into
  ``extract_path`` on first use.
- ``path``: an ``.npz`` of your own: ``x_train``/``x_test`` (sequences, time steps, channels) float,
  ``y_train``/``y_test`` labels, and, for variable lengths, ``lengths_train``/``lengths_test``.

A batch is ``(batch, longest, channels)`` float32 with NaN after each sequence's end: the lengths travel
with the values through every shuffle and slice, and a model packs its batch from them
(:func:`sequence_lengths`). Channels are standardised with the training set's statistics. The test set is
cut into the same two fixed, stratified halves as CIFAR-10's (``search`` / ``held_out``,
:func:`dse.training.cifar10.half_of_test_set`); activation ranges are calibrated on training sequences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from dse.exceptions import DataError
from dse.training.cifar10 import TestSplit, half_of_test_set, stratified_subset, within_class_rank
from dse.training.tensor_data import TensorDataModule

__all__ = ["SequenceArrays", "TimeSeriesDataModule", "load_aeon", "load_sequences_npz", "sequence_lengths"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequenceArrays:
    """NaN-padded float32 ``(sequences, longest, channels)`` arrays, int64 labels, and the class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def sequence_lengths(x: torch.Tensor) -> torch.Tensor:
    """Each sequence's length in a NaN-padded ``(batch, time, channels)`` batch; refuses NaN that is not
    padding (a gap inside a sequence, or a partly missing step), which no length can describe."""
    steps = ~torch.isnan(x).any(dim=2)
    lengths = steps.sum(dim=1)
    inside = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    if bool((steps != inside).any()) or bool((torch.isnan(x).any(2) != torch.isnan(x).all(2)).any()):
        raise DataError(
            "A batch holds NaN inside a sequence (or a step with some channels missing): dse reads NaN as padding "
            "after a sequence's end only. Pad each sequence after its last step, or fill missing values first."
        )
    if bool((lengths == 0).any()):
        raise DataError("A batch holds an empty sequence (every step NaN); drop it from the data set.")
    return lengths


def _padded(series: list[np.ndarray]) -> np.ndarray:
    """aeon's list of (channels, length) arrays -> NaN-padded (sequences, longest, channels) float32."""
    longest = max(s.shape[1] for s in series)
    out = np.full((len(series), longest, series[0].shape[0]), np.nan, dtype=np.float32)
    for i, s in enumerate(series):
        out[i, : s.shape[1]] = s.T
    return out


def _integer_labels(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    classes = sorted({str(v) for v in train}, key=lambda c: (len(c), c))  # '2' before '10'
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in test} - set(index))
    if unknown:
        raise DataError(f"The test set has labels the training set lacks: {unknown[:5]}.")
    return (
        np.array([index[str(v)] for v in train], dtype=np.int64),
        np.array([index[str(v)] for v in test], dtype=np.int64),
        tuple(classes),
    )


def known_aeon_sets() -> list[str]:
    """The UCR/UEA classification sets aeon can load by name."""
    from aeon.datasets.tsc_datasets import multivariate, univariate

    return sorted(set(univariate) | set(multivariate))


def load_aeon(name: str, extract_path: str | None = None) -> SequenceArrays:
    """A UCR/UEA set by name through ``aeon.datasets.load_classification`` (JapaneseVowels ships with aeon;
    others are downloaded into ``extract_path``)."""
    from aeon.datasets import load_classification

    known = known_aeon_sets()
    if name not in known:
        close = [k for k in known if k.lower().startswith(name.lower()[:4])][:5]
        raise DataError(
            f"aeon knows no classification set named {name!r}{f' (close: {close})' if close else ''}. The names are "
            'in aeon.datasets.tsc_datasets (univariate, multivariate): python -c "from aeon.datasets.tsc_datasets '
            'import multivariate; print(sorted(multivariate))"; or give your own data.path=<file>.npz.'
        )
    try:
        x_train, y_train = load_classification(name, split="train", extract_path=extract_path)
        x_test, y_test = load_classification(name, split="test", extract_path=extract_path)
    except (OSError, ValueError) as exc:  # a download that failed (no network, a proxy), a broken file
        raise DataError(
            f"aeon could not load {name!r}: {type(exc).__name__}: {exc}. Sets other than those aeon ships are "
            "downloaded by aeon (its downloads time out) into data.extract_path; check the network, or give "
            "data.path=<file>.npz."
        ) from exc
    series_train = list(x_train) if isinstance(x_train, list) else [s for s in np.asarray(x_train)]
    series_test = list(x_test) if isinstance(x_test, list) else [s for s in np.asarray(x_test)]
    train, test, classes = _integer_labels(np.asarray(y_train), np.asarray(y_test))
    return SequenceArrays(_padded(series_train), train, _padded(series_test), test, classes)


def load_sequences_npz(path: str | Path) -> SequenceArrays:
    """Your own file: ``x_train``/``x_test`` (sequences, steps, channels), labels, optional ``lengths_*``."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"data.path={str(path)!r} is not a file; give an .npz with x_train, y_train, x_test, y_test.")
    with np.load(file) as npz:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz]
        if missing:
            raise DataError(f"{file} lacks {missing}; it has {sorted(npz.files)}.")
        arrays = {}
        for split in ("train", "test"):
            x = np.asarray(npz[f"x_{split}"], dtype=np.float32)
            if x.ndim != 3:
                raise DataError(f"{file}: x_{split} must be (sequences, time steps, channels), got {x.shape}.")
            lengths = npz.get(f"lengths_{split}")
            if lengths is None and np.isnan(x).any():
                raise DataError(
                    f"{file}: x_{split} holds NaN but the file has no lengths_{split}: variable-length sequences "
                    f"need their lengths (an int array, one per sequence) so that padding is not read as data."
                )
            if lengths is not None:
                lengths = np.asarray(lengths)
                if lengths.shape != (len(x),) or (lengths < 1).any() or (lengths > x.shape[1]).any():
                    raise DataError(
                        f"{file}: lengths_{split} must hold one length in 1..{x.shape[1]} per sequence "
                        f"({len(x)}), got shape {lengths.shape}, range [{lengths.min()}, {lengths.max()}]."
                    )
                x = x.copy()
                x[np.arange(x.shape[1])[None, :] >= lengths[:, None]] = np.nan  # whatever padded it: NaN now
            arrays[split] = x
        train, test, classes = _integer_labels(np.asarray(npz["y_train"]), np.asarray(npz["y_test"]))
    return SequenceArrays(arrays["train"], train, arrays["test"], test, classes)


class TimeSeriesDataModule(TensorDataModule):
    """Train/test loaders of a UCR/UEA set (``name``, through aeon) or an ``.npz`` of your own (``path``).

    Args:
        name: aeon's name of the set (JapaneseVowels ships with aeon); ignored when ``path`` is given.
        path: an ``.npz`` of your own (module docstring), or None.
        extract_path: where aeon keeps downloaded sets (None: aeon's default).
        batch_size, eval_batch_size: training and evaluation batch sizes (evaluation never drops samples).
        test_split: ``search``, ``held_out`` (two fixed disjoint stratified halves) or ``all``.
        test_subset: keep this many sequences of that split (stratified, seeded), or None for all.
        subset_seed: seed of that subset and of the validation split.
        val_size: training sequences held out for validation (0: none).
        train_subset: train on this many of the remaining training sequences (stratified, seeded), or None.
        num_workers: DataLoader workers.
    """

    # the splits setup() builds (declared here too: type checkers do not follow dse.training to training/)
    _train: TensorDataset | None
    _val: TensorDataset | None
    _test: TensorDataset | None

    drop_last_train = False  # a few hundred sequences: every one of them trains

    def __init__(
        self,
        name: str = "JapaneseVowels",
        path: str | None = None,
        extract_path: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        test_split: TestSplit = "all",
        test_subset: int | None = None,
        subset_seed: int = 0,
        val_size: int = 0,
        train_subset: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.set_name, self.path, self.extract_path = name, path, extract_path
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.test_split, self.test_subset, self.subset_seed = test_split, test_subset, subset_seed
        self.val_size, self.train_subset, self.num_workers = val_size, train_subset, num_workers
        self.classes: tuple[str, ...] = ()
        self.input_shape: tuple[int, int] | None = (
            None  # (median training length, channels): what the cost model prices
        )
        self._calibration_pool: np.ndarray | None = None

    @property
    def n_test(self) -> int:
        """Test sequences served (of ``test_split``); after :meth:`setup`."""
        if self._test is None:
            raise RuntimeError("Call setup() first.")
        return len(self._test)

    @property
    def source(self) -> str:
        return str(self.path) if self.path else f"aeon:{self.set_name}"

    def setup(self, stage: str | None = None) -> None:
        if self._test is not None:
            return
        arrays = load_sequences_npz(self.path) if self.path else load_aeon(self.set_name, self.extract_path)
        self.classes = arrays.classes
        # standardise each channel with the training set's statistics (NaN padding stays NaN)
        mean = np.nanmean(arrays.x_train, axis=(0, 1))
        std = np.nanstd(arrays.x_train, axis=(0, 1)) + 1e-6
        x_train, x_test = (arrays.x_train - mean) / std, (arrays.x_test - mean) / std
        lengths = (~np.isnan(x_train).any(axis=2)).sum(axis=1)
        self.input_shape = (int(np.median(lengths)), x_train.shape[2])
        half = half_of_test_set(within_class_rank(arrays.y_test), self.test_split)
        if self.test_subset is not None:
            half = half[stratified_subset(arrays.y_test[half], self.test_subset, self.subset_seed)]
        self.test_indices = half
        self._test = _dataset(x_test[half], arrays.y_test[half])
        train = np.ones(len(arrays.y_train), dtype=bool)
        if self.val_size:
            val = stratified_subset(arrays.y_train, self.val_size, self.subset_seed)
            train[val] = False
            self._val = _dataset(x_train[val], arrays.y_train[val])
        kept = np.flatnonzero(train)
        if self.train_subset is not None and self.train_subset < len(kept):
            kept = kept[stratified_subset(arrays.y_train[kept], self.train_subset, self.subset_seed + 1)]
        self._train = _dataset(x_train[kept], arrays.y_train[kept])
        self._calibration_pool = x_train[kept]
        _logger.info(
            "%s: %d training and %d test sequences (%s), %d channels, lengths %d..%d",
            self.source,
            len(kept),
            len(half),
            self.test_split,
            x_train.shape[2],
            int(lengths.min()),
            int(lengths.max()),
        )

    def calibration_images(self, count: int, seed: int) -> torch.Tensor | None:
        """``count`` training sequences (a seeded pick), NaN-padded, for activation-range calibration."""
        if self._calibration_pool is None:
            return None
        pool = self._calibration_pool
        pick = np.sort(np.random.default_rng(seed).permutation(len(pool))[: min(count, len(pool))])
        return torch.from_numpy(np.ascontiguousarray(pool[pick]))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch  # standardised once at setup


def _dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y))
