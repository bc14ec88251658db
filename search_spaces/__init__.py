"""Search-space definitions: which layers are targeted and which knobs each gets."""

from .decimal_places import decimal_places_space
from .formats import formats_space
from .layer_groups import check_layers, resolve_groups
from .multipliers import multiplier_space
from .pruning import load_sensitivity, prune_space
from .space import EXACT, BoundSpace, Knob, SearchSpace

__all__ = [
    "EXACT",
    "BoundSpace",
    "Knob",
    "SearchSpace",
    "check_layers",
    "decimal_places_space",
    "formats_space",
    "load_sensitivity",
    "multiplier_space",
    "prune_space",
    "resolve_groups",
]
