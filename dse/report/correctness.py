"""Per-image correctness stored beside an accuracy, so the document gives every accuracy its 95% interval and
every difference from a reference its paired test (McNemar) without evaluating anything again.

A row stores ``correct`` as :func:`~dse.candidates.accuracy_statistics.pack_correct` text (one bit per held-out
image, in the evaluation order): 5,000 images take 1,250 characters of CSV.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scipy import stats

from dse.candidates.accuracy_statistics import accuracy_interval, paired_difference, unpack_correct

__all__ = ["accuracy_cell", "difference_cell", "interval_from_counts", "p_text", "paired_p"]


def interval_from_counts(accuracy: float, n_images: int) -> tuple[float, float]:
    """Wilson's 95% interval of an accuracy on ``n_images`` (the count is recovered from the fraction)."""
    k = round(accuracy * n_images)
    ci = stats.binomtest(k, n_images).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_cell(row: Mapping[str, Any], column: str = "top1", images: str = "images") -> str:
    """``86.95% [86.0, 87.9]``: the accuracy and its 95% interval (from the stored bits when there are)."""
    n = int(row[images])
    if isinstance(row.get("correct"), str) and column == "top1":
        r = accuracy_interval(unpack_correct(row["correct"], n))
        low, high = r.low, r.high
    else:
        low, high = interval_from_counts(float(row[column]), n)
    return f"{100 * float(row[column]):.2f}% [{100 * low:.1f}, {100 * high:.1f}]"


def paired_p(row: Mapping[str, Any], reference: Mapping[str, Any], images: str = "images") -> float:
    """McNemar's exact p-value of ``row`` against ``reference`` on the same images (their stored bits)."""
    n = int(row[images])
    if int(reference[images]) != n:
        raise ValueError(f"Paired rows must share their images: {n} vs {int(reference[images])}.")
    return paired_difference(unpack_correct(row["correct"], n), unpack_correct(reference["correct"], n)).p_value


def p_text(row: Mapping[str, Any], reference: Mapping[str, Any], images: str = "images") -> str:
    """McNemar's p of ``row`` against ``reference`` as text (``1`` when both got the same images right)."""
    return "1" if row["correct"] == reference["correct"] else f"{paired_p(row, reference, images):.2g}"


def difference_cell(row: Mapping[str, Any], reference: Mapping[str, Any], images: str = "images") -> str:
    """``-0.23 (p 0.04)``: points against ``reference`` and McNemar's p-value (``=`` when no image differs)."""
    delta = 100 * (float(row["top1"]) - float(reference["top1"]))
    return f"{delta:+.2f} (p {p_text(row, reference, images)})"
