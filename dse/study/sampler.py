"""The study's sampler, from its config (``conf/sampler/``)."""

from __future__ import annotations

import functools

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig

from dse.exceptions import ConfigError
from dse.search_spaces import BoundSpace

__all__ = ["MAX_GRID_POINTS", "build_sampler"]

MAX_GRID_POINTS = 1_000_000


def build_sampler(sampler_cfg: DictConfig, space: BoundSpace) -> optuna.samplers.BaseSampler:
    """Instantiate the sampler; a partial one (``_partial_: true``, the grid) gets the bound space."""
    sampler = instantiate(sampler_cfg)
    if not isinstance(sampler, functools.partial):
        return sampler
    if space.size > MAX_GRID_POINTS:
        raise ConfigError(
            f"A grid over this space has {space.size:.3g} points (at most {MAX_GRID_POINTS:,}); use "
            "space.granularity=uniform or group, fewer choices, or a sampler such as tpe/nsga2/random."
        )
    return sampler(search_space=space.grid())
