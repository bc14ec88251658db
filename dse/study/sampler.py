"""The study's sampler: a configured Optuna sampler, or a grid over the bound space (``conf/sampler/``)."""

from __future__ import annotations

import functools

import optuna

from dse.exceptions import ConfigError
from dse.search_spaces import BoundSpace

__all__ = ["MAX_GRID_POINTS", "sampler_for_space"]

MAX_GRID_POINTS = 1_000_000


def sampler_for_space(
    sampler: optuna.samplers.BaseSampler | functools.partial, space: BoundSpace
) -> optuna.samplers.BaseSampler:
    """``sampler`` itself, or, for a partial one (``_partial_: true``: the grid), the grid over ``space``."""
    if not isinstance(sampler, functools.partial):
        return sampler
    if space.size > MAX_GRID_POINTS:
        raise ConfigError(
            f"A grid over this space has {space.size:.3g} points (at most {MAX_GRID_POINTS:,}); use "
            "space.granularity=uniform or group, fewer choices, or a sampler such as tpe/nsga2/random."
        )
    return sampler(search_space=space.grid())
