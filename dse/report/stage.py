"""A report stage: what it computes (stored under ``report.store/<name>/``) and the section it renders from that."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dse.report.context import ReportContext

__all__ = ["Stage"]


@dataclass(frozen=True)
class Stage:
    """One section of ``docs/results.md``.

    ``compute`` measures and stores (resuming what an interrupted run left); ``render`` reads only the
    stored files and returns the section's Markdown (and writes its figures).
    """

    name: str
    title: str
    compute: Callable[[ReportContext], None]
    render: Callable[[ReportContext], str]
    reads_test_set: bool = True  # False: a benchmark with data of its own (its meta then names no test set)
