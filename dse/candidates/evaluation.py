"""Evaluating a candidate model: accuracy through Lightning, and measured time.

Accuracy comes from ``Trainer.test`` of :class:`~dse.training.classifier.ImageClassifier`
on the data module's test loader (no shuffle, no dropped samples), on the GPU
when there is one. Inference time is the wall-clock time of the model's forward
passes over the same images, already on the device and preprocessed by the data
module (``on_after_batch_transfer``, so any data set works): one warm-up
batch, then ``repeats`` full passes, median and spread reported. It is the time
of *this emulation on this machine*, not of any hardware the cost model describes.
"""

from __future__ import annotations

import contextlib
import logging
import random
import statistics
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dse.exceptions import ConfigError
from dse.training.classifier import ImageClassifier, in_layout
from dse.worker.process import allocated_threads, single_process

__all__ = ["AccuracyResult", "Evaluator", "TimingResult", "default_device"]

_logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class AccuracyResult:
    acc_top1: float
    acc_top5: float
    n_images: int


@dataclass(frozen=True)
class RelativeTiming:
    """A model's pass time as a multiple of a reference model's (median over passes), and its own seconds."""

    ratio: float
    min_s: float
    max_s: float
    repeats: int


@dataclass(frozen=True)
class TimingResult:
    """Seconds for one forward pass over the whole evaluation set."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int
    n_images: int

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.median_s / self.n_images


class Evaluator:
    """Accuracy and timing of models on one data module's test set.

    Args:
        datamodule: a set-up-able Lightning data module with ``test_dataloader``.
        accelerator: Lightning accelerator (``"auto"``: GPU when present).
        channels_last: evaluate in NHWC (faster for convolutions on CPU and GPU).
        timing_repeats: full timed passes per model (median reported).
        timing_threads: intra-op threads while timing (CPU; None = the evaluation's). One by default:
            the time of the candidate's work, which a neighbour's load on the other cores leaves alone.
        relative_timing: candidates are timed against the exact model (:meth:`relative_time`), which
            cancels a shared machine's load; False: the bare wall clock of :meth:`inference_time`.
        threads: torch intra-op threads, or None: the CPUs of this worker's SLURM allocation
            (``SLURM_CPUS_PER_TASK``) if any, else torch's default (see :mod:`dse.worker.process`).
        calibration_images: training images (a seeded pick, :meth:`calibration_batches`) over which
            activation ranges are measured once.
        calibration_seed: seed of that selection.
        order_seed: images are evaluated in a seeded random order (None: the data module's), so
            that the first images of :meth:`correct` are a random sample of the set: screening
            (:mod:`dse.study.screening`) bounds the whole set's accuracy from them, and the
            shipped subset and CIFAR-10's test set are class-major (a prefix of them is a few classes).
    """

    def __init__(
        self,
        datamodule: L.LightningDataModule,
        accelerator: str = "auto",
        channels_last: bool = True,
        timing_repeats: int = 3,
        threads: int | None = None,
        calibration_images: int = 256,
        calibration_seed: int = 0,
        timing_threads: int | None = 1,
        relative_timing: bool = True,
        order_seed: int | None = 0,
    ) -> None:
        if timing_repeats < 1:
            raise ConfigError(
                f"evaluation.timing_repeats must be >= 1 (timed passes per candidate), got {timing_repeats}."
            )
        self.datamodule = datamodule
        self.accelerator = accelerator
        self.channels_last = channels_last
        self.timing_repeats = timing_repeats
        self.timing_threads = timing_threads
        self.relative_timing = relative_timing
        self.calibration_images = calibration_images
        self.calibration_seed = calibration_seed
        self.order_seed = order_seed
        threads = allocated_threads(threads)
        if threads:
            torch.set_num_threads(threads)
        datamodule.prepare_data()  # Lightning's order: download (if the data config asks for it), then set up
        datamodule.setup("test")
        self.device = default_device() if accelerator == "auto" else torch.device(accelerator)
        self._timing_batches: list[torch.Tensor] | None = None
        self._labels: list[torch.Tensor] = []
        self._order: torch.Tensor | None = None

    @property
    def n_images(self) -> int:
        return len(self.datamodule.test_dataloader().dataset)

    def accuracy(self, model: nn.Module) -> AccuracyResult:
        """Top-1/top-5 accuracy of ``model`` (eval mode) on every test image: the mean of :meth:`correct`."""
        top1, top5 = self.correct(model)
        return AccuracyResult(int(top1.sum()) / len(top1), int(top5.sum()) / len(top5), len(top1))

    def _batches(self) -> list[torch.Tensor]:
        if self._timing_batches is None:
            # the data module's own device-side preprocessing (normalisation), as in Trainer.test
            prepare = self.datamodule.on_after_batch_transfer
            batches = [prepare((x.to(self.device), y.to(self.device)), 0) for x, y in self.datamodule.test_dataloader()]
            images, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
            n, size = len(labels), len(batches[0][1])
            if self.order_seed is None:
                self._order = torch.arange(n)
            else:
                self._order = torch.randperm(n, generator=torch.Generator().manual_seed(self.order_seed))
            on_device = self._order.to(self.device)
            self._timing_batches = [in_layout(x, self.channels_last) for x in images[on_device].split(size)]
            self._labels = list(labels[on_device].split(size))
        return self._timing_batches

    @property
    def image_order(self) -> torch.Tensor:
        """The data set index of each image, in the order :meth:`correct` evaluates them (``order_seed``)."""
        self._batches()
        assert self._order is not None
        return self._order

    def labelled_batches(self, stop: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` batches of the first ``stop`` images of the evaluation order (:attr:`image_order`),
        preprocessed as :meth:`correct` sees them: what another runtime must be given to score the same images."""
        end = self.n_images if stop is None else min(stop, self.n_images)
        out, first = [], 0
        for x, y in zip(self._batches(), self._labels, strict=True):
            if first >= end:
                break
            out.append((x[: end - first], y[: end - first]))
            first += len(y)
        return out

    def correct(self, model: nn.Module, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-1 and top-5 correctness of each test image in ``[start, stop)`` of the evaluation order
        (:attr:`image_order`: a seeded shuffle, so any prefix is a random sample), CPU bool tensors.

        The one accuracy path: Lightning's predict loop over the data module's test images, preprocessed
        once (``on_after_batch_transfer``) and kept on the device, so a search can evaluate a candidate a
        slice at a time (``dse.study.screening``) and never twice.
        """
        end = min(stop if stop is not None else self.n_images, self.n_images)
        pieces: list[tuple[torch.Tensor, torch.Tensor]] = []
        first = 0  # index of the batch's first image
        for x, y in zip(self._batches(), self._labels, strict=True):
            lo, hi = max(start, first) - first, min(end, first + len(y)) - first
            first += len(y)
            if hi > lo:
                pieces.append((x[lo:hi], y[lo:hi]))
        if not pieces:
            empty = torch.zeros(0, dtype=torch.bool)
            return empty, empty
        trainer = L.Trainer(
            accelerator=self.accelerator,
            devices=1,
            plugins=[single_process()],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        module = ImageClassifier(model.eval(), channels_last=self.channels_last)
        out = trainer.predict(module, dataloaders=DataLoader(pieces, batch_size=None))  # type: ignore[arg-type]
        assert out is not None
        return torch.cat([t for t, _ in out]), torch.cat([f for _, f in out])

    def calibration_batches(self) -> list[torch.Tensor]:
        """``calibration_images`` *training* images (the data module's seeded pick), normalised, on the device.

        Training images, as post-training quantization calibrates: no image that scores a candidate sets
        its ranges. A data module without training images (an eval-only file of your own) falls back to a
        seeded pick of the evaluation images, with a warning.
        """
        pool = getattr(self.datamodule, "calibration_images", None)
        raw = pool(self.calibration_images, self.calibration_seed) if pool is not None else None
        if raw is not None:
            prepare = self.datamodule.on_after_batch_transfer  # the same normalisation as the evaluation images
            images = prepare((raw.to(self.device), torch.zeros(len(raw), dtype=torch.long)), 0)[0]
            return list(images.split(self.datamodule.eval_batch_size))  # type: ignore[attr-defined]
        _logger.warning(
            "The data module has no training images: activation ranges are calibrated on %d evaluation images. "
            "Give a file with x_train (or x_calibration) to calibrate on training images.",
            self.calibration_images,
        )
        images = torch.cat(self._batches())
        generator = torch.Generator().manual_seed(self.calibration_seed)
        pick = torch.randperm(len(images), generator=generator)[: self.calibration_images].sort().values
        position = torch.argsort(self.image_order)  # where each data set index sits in evaluation order
        chosen = images[position[pick].to(images.device)]  # picked by data set index: independent of order_seed
        return list(chosen.split(self.datamodule.eval_batch_size))  # type: ignore[attr-defined]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _prepared(self, model: nn.Module) -> nn.Module:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        model = model.to(self.device).to(memory_format=memory_format).eval()
        model(self._batches()[0])  # warm-up: allocator, kernel selection
        return model

    def _timed(self, model: nn.Module, x: torch.Tensor) -> float:
        self._sync()
        start = time.perf_counter()
        model(x)
        self._sync()
        return time.perf_counter() - start

    @contextlib.contextmanager
    def _timing_threads(self) -> Iterator[None]:
        """``timing_threads`` intra-op threads within the block (CPU only), then the previous setting."""
        if self.timing_threads is None or self.device.type != "cpu":
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.timing_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    @torch.inference_mode()
    def inference_time(self, model: nn.Module) -> TimingResult:
        """Median wall-clock seconds of ``repeats`` forward passes over the evaluation set (``timing_threads``)."""
        with self._timing_threads():
            model = self._prepared(model)
            times = [sum(self._timed(model, x) for x in self._batches()) for _ in range(self.timing_repeats)]
        n = sum(len(x) for x in self._batches())
        return TimingResult(statistics.median(times), min(times), max(times), self.timing_repeats, n)

    @torch.inference_mode()
    def interleaved_times(self, models: Mapping[str, nn.Module], repeats: int, seed: int = 0) -> dict[str, list[float]]:
        """Seconds of one pass over the evaluation set for each model, ``repeats`` times each (``timing_threads``).

        Each repeat times every model once, in a freshly shuffled order, so drift and a neighbour's bursts
        hit every model alike; the spread over repeats is what the machine's noise leaves.
        """
        order = list(models)
        rng = random.Random(seed)
        times: dict[str, list[float]] = {name: [] for name in order}
        with self._timing_threads():
            prepared = {name: self._prepared(model) for name, model in models.items()}
            for _ in tqdm(range(repeats), desc="timing passes", unit="repeat", leave=False):
                rng.shuffle(order)
                for name in order:
                    times[name].append(sum(self._timed(prepared[name], x) for x in self._batches()))
        return times

    @torch.inference_mode()
    def relative_time(self, model: nn.Module, reference: nn.Module) -> RelativeTiming:
        """``model``'s time as a multiple of ``reference``'s, in passes interleaved batch by batch.

        Why: on a shared machine another process's load changes every wall-clock pass (the same
        arithmetic measured 3.4 s and 12.6 s), but within a few tens of milliseconds it slows a
        batch of the candidate and the reference batch just before it alike, so each pass's ratio
        cancels it; the median over ``repeats`` passes drops a pass a burst split. On one thread
        (``timing_threads=1``, the default) because with several, a neighbour's load slows kernels
        unequally (an OpenMP kernel and oneDNN's react differently to a thread sharing its core):
        measured beside a busy process on 2 cores, the ratio of decimal-place candidates moved by up
        to 8% on one thread and by up to 30% on two (``tests/test_timing.py`` holds it within 15%).
        Not cancelled: a neighbour that competes for the same execution units as one of the two
        models more than the other (the lookup kernel's integer work moved by up to 25%).
        """
        with self._timing_threads():
            model, reference = self._prepared(model), self._prepared(reference)
            ratios, own = [], []
            for _ in range(self.timing_repeats):
                mine = base = 0.0
                for x in self._batches():
                    base += self._timed(reference, x)
                    mine += self._timed(model, x)
                ratios.append(mine / base)
                own.append(mine)
        return RelativeTiming(statistics.median(ratios), min(own), max(own), self.timing_repeats)
