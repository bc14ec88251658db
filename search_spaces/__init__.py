"""Search-space definitions: which layers are targeted and which knobs each gets."""

from .arithmetic import arithmetic_space
from .decimal_places import decimal_places_space
from .formats import formats_space
from .layer_groups import check_layers, resolve_groups
from .multipliers import multiplier_space
from .pruning import load_sensitivity, prune_space
from .space import ARITHMETIC, EXACT, BoundSpace, Knob, SearchSpace

__all__ = [
    "ARITHMETIC",
    "EXACT",
    "BoundSpace",
    "Knob",
    "SearchSpace",
    "arithmetic_space",
    "check_layers",
    "decimal_places_space",
    "formats_space",
    "load_sensitivity",
    "multiplier_space",
    "prune_space",
    "resolve_groups",
]
