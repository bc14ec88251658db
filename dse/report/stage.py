"""A report stage: what it computes (stored under ``report.store/<name>/``) and the section it renders from that."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dse.report.context import NotMeasured, ReportContext

__all__ = ["Stage"]


@dataclass(frozen=True)
class Stage:
    """One section of ``docs/results.md``.

    ``compute`` measures and stores (resuming what an interrupted run left); ``render`` reads only the
    stored files and returns the section's Markdown (and writes its figures).
    """

    def is_stale(self, ctx: ReportContext) -> bool:
        """Stored before the held-out protocol: its accuracies may come from the images that chose them."""
        if self.held_out_table is None:
            return False
        try:
            ctx.held_out_table(self.name, self.held_out_table)
        except (NotMeasured, FileNotFoundError):
            return True
        return False

    name: str
    title: str
    compute: Callable[[ReportContext], None]
    render: Callable[[ReportContext], str]
    reads_test_set: bool = True  # False: a benchmark with data of its own (its meta then names no test set)
    # the stored table whose per-image ``correct`` column marks results measured under the held-out protocol
    # (None: a benchmark, no accuracies); a stage stored without it is shown as stale, not quoted
    held_out_table: str | None = None
