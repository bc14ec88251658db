"""Prune a bound space with a sensitivity table from ``python -m dse.sensitivity``.

The table says how many accuracy points are lost when a single unit (group or
layer) takes a value and everything else stays exact. A choice that already
costs more than ``max_drop_points`` on its own rarely survives once other units
are approximated too (drops roughly add up), so the sampler is not offered it.
``exact`` is never pruned, and choices the table did not measure are kept.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pandas as pd

from dse.exceptions import ConfigError

from .space import EXACT, BoundSpace

__all__ = ["load_sensitivity", "prune_space"]

_logger = logging.getLogger(__name__)
_COLUMNS = ("knob", "unit", "value", "accuracy_drop_points")


def load_sensitivity(path: str | Path) -> pd.DataFrame:
    """Read a sensitivity CSV and check it has the columns pruning needs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Sensitivity table {str(path)!r} not found. Create it with `python -m dse.sensitivity "
            "study=<same study> sensitivity.knob=<knob> sensitivity.values=[...]` (it writes "
            "sensitivity/sensitivity_<knob>.csv), or set pruning.table=null."
        )
    table = pd.read_csv(path, dtype={"unit": str, "value": str}, keep_default_na=False)
    missing = [c for c in _COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(
            f"Sensitivity table {str(path)!r} lacks the columns {missing}; "
            "regenerate it with python -m dse.sensitivity."
        )
    return table


def prune_space(space: BoundSpace, table: pd.DataFrame, max_drop_points: float) -> BoundSpace:
    """``space`` without the choices whose single-unit drop in ``table`` exceeds ``max_drop_points``."""
    if max_drop_points < 0:
        raise ConfigError(f"pruning.max_drop_points must be >= 0 points, got {max_drop_points}.")
    drops = {(row.knob, row.unit, row.value): float(row.accuracy_drop_points) for row in table.itertuples(index=False)}
    params, matched, removed = {}, 0, []
    for name, (knob, layers) in space.params.items():
        unit = name.split(".", 1)[1] if "." in name else ""  # parameter names are <field>.<unit>
        keep = []
        for choice in knob.choices:
            drop = drops.get((knob.field, unit, str(choice)))
            matched += drop is not None
            if choice == EXACT or drop is None or drop <= max_drop_points:
                keep.append(choice)
            else:
                removed.append(f"{name}={choice} ({drop:.1f} pts)")
        if not keep:
            raise ConfigError(
                f"Every choice of {name} loses more than {max_drop_points} points on its own; raise "
                "pruning.max_drop_points or add 'exact' to the space."
            )
        params[name] = (replace(knob, choices=tuple(keep)), layers)
    if matched == 0:
        raise ConfigError(
            f"The sensitivity table matches none of the space's parameters {sorted(space.params)[:4]}... "
            f"(its knobs {sorted(set(table['knob']))}, units {sorted(set(table['unit']))[:4]}...). Measure the "
            "same knob at the space's granularity (sensitivity.granularity=group|layer)."
        )
    _logger.info("Pruned %d choices with drop > %.2f points: %s", len(removed), max_drop_points, ", ".join(removed))
    return BoundSpace(params)
