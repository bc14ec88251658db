"""Small Markdown and number formatting helpers for the report's sections."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["pct", "points", "table"]


def pct(value: float, digits: int = 2) -> str:
    """A fraction as a percentage: 0.8719 -> ``87.19%``."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}%"


def points(delta: float, digits: int = 2) -> str:
    """A difference of fractions in percentage points, signed: -0.012 -> ``-1.20``."""
    return "n/a" if delta is None or math.isnan(delta) else f"{100 * delta:+.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
