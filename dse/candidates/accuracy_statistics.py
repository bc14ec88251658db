"""How sure an accuracy is: its confidence interval, and whether two models differ on the same images.

An accuracy on n images is a binomial proportion: near 87%, its 95% interval is about +-0.7 points
for n = 2,000 and +-0.33 for n = 10,000 (Wilson's score interval, which keeps its coverage near 0 and 1).
Two models scored on the *same* images are compared image by image, not by their intervals: McNemar's
exact test counts the images only one of them gets right, and asks whether those split evenly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

__all__ = [
    "AccuracyInterval",
    "PairedDifference",
    "accuracy_interval",
    "pack_correct",
    "paired_difference",
    "unpack_correct",
]


@dataclass(frozen=True)
class AccuracyInterval:
    accuracy: float
    low: float
    high: float
    n_images: int


@dataclass(frozen=True)
class PairedDifference:
    """``a`` against ``b`` on the same images: the accuracy difference, the images only one got right,
    and McNemar's exact two-sided p-value."""

    difference: float
    only_a: int
    only_b: int
    p_value: float


def accuracy_interval(correct: torch.Tensor, confidence: float = 0.95) -> AccuracyInterval:
    """Accuracy of per-image correctness ``correct`` with its Wilson score interval (scipy).

    >>> r = accuracy_interval(torch.tensor([True] * 87 + [False] * 13))
    >>> round(r.accuracy, 2), round(r.low, 3), round(r.high, 3)
    (0.87, 0.79, 0.922)
    """
    n, k = len(correct), int(correct.sum())
    if n == 0:
        raise ValueError("An accuracy needs at least one image.")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return AccuracyInterval(k / n, float(ci.low), float(ci.high), n)


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> PairedDifference:
    """McNemar's exact test of ``a`` against ``b``: per-image correctness of two models on the same images.

    >>> d = paired_difference(torch.tensor([True] * 90 + [False] * 10), torch.tensor([True] * 80 + [False] * 20))
    >>> round(d.difference, 2), d.only_a, d.only_b, round(d.p_value, 4)
    (0.1, 10, 0, 0.002)
    """
    if a.shape != b.shape:
        raise ValueError(f"Paired correctness must cover the same images: {tuple(a.shape)} vs {tuple(b.shape)}.")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return PairedDifference((int(a.sum()) - int(b.sum())) / len(a), only_a, only_b, p)


def pack_correct(correct: torch.Tensor) -> str:
    """Per-image correctness as text (hex of the packed bits: 5,000 images in 1,250 characters), to be stored
    beside an accuracy so that intervals and paired tests can be computed later without evaluating again."""
    return np.packbits(correct.cpu().numpy().astype(bool)).tobytes().hex()


def unpack_correct(text: str, n_images: int) -> torch.Tensor:
    """The inverse of :func:`pack_correct` for ``n_images`` images.

    >>> unpack_correct(pack_correct(torch.tensor([True, False, True])), 3).tolist()
    [True, False, True]
    """
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n_images]
    return torch.from_numpy(bits.astype(bool))
