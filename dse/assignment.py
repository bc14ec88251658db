"""Per-layer assignments: what each Conv1d/Conv2d/Linear layer of a candidate runs with.

An assignment maps a layer's qualified name (``features.3.conv.1.0``) to a
:class:`LayerConfig`. This module only describes candidates (the cost model
reads it); :mod:`dse.candidates.transform` applies an assignment to a copy of a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from torch import nn

from dse.exceptions import SearchSpaceError
from dse.multipliers import get_multiplier
from dse.numerics.decimal_places import check_decimals
from dse.numerics.formats import parse_format

__all__ = [
    "BASELINE_KEY",
    "TARGETABLE_TYPES",
    "UNEMULATED_TYPES",
    "Assignment",
    "LayerConfig",
    "TargetableLayer",
    "assignment_key",
    "check_layer_names",
    "layer_kind",
    "needs_activation_ranges",
    "targetable_layers",
    "unemulated_layers",
]

# Layers whose weights (and products) dse can change.
TARGETABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)
# Layers with multiplications dse cannot change yet: they run float32 in every candidate and are priced so
# (dse.cost.macs.unemulated_shapes). Linear layers inside them (attention's out_proj) are not called as modules.
UNEMULATED_TYPES: tuple[type[nn.Module], ...] = (
    nn.RNNBase,
    nn.MultiheadAttention,
    nn.Conv3d,
    nn.modules.conv._ConvTransposeNd,
)


@dataclass(frozen=True)
class LayerConfig:
    """What one layer runs with; every field's default is exact fp32.

    Attributes:
        decimals: decimal places of the weights (1..9), or None for exact.
        multiplier: name of the multiplier the layer's products use (weights and
            activations quantized to its operand width), or None for float32.
        weight_format, activation_format: number formats (``dse.numerics.formats``:
            fp16, bf16, e4m3, int8, ...) the weights / the layer's input take, or None (fp32).
    """

    decimals: int | None = None
    multiplier: str | None = None
    weight_format: str | None = None
    activation_format: str | None = None

    def __post_init__(self) -> None:
        if self.decimals is not None:
            check_decimals(self.decimals)
        if self.multiplier is not None:
            get_multiplier(self.multiplier)  # unknown names fail here, listing the known ones
            if self.weight_format or self.activation_format:
                raise SearchSpaceError(
                    f"A layer cannot take multiplier {self.multiplier!r} and number formats "
                    f"({self.weight_format}, {self.activation_format}) at once: "
                    "the multiplier fixes its operand format."
                )
        for fmt in (self.weight_format, self.activation_format):
            if fmt is not None:
                parse_format(fmt)

    @property
    def is_exact(self) -> bool:
        return self == LayerConfig()

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


Assignment = Mapping[str, LayerConfig]


TargetableLayer = nn.Conv1d | nn.Conv2d | nn.Linear


def check_layer_names(model: nn.Module, names: Iterable[str], what: str = "Assignment") -> None:
    """Raise a SearchSpaceError naming the layers ``model`` lacks, and the ones it has."""
    layers = targetable_layers(model)
    unknown = sorted(set(names) - set(layers))
    if unknown:
        raise SearchSpaceError(
            f"{what} names layers the model lacks: {unknown[:5]}. Conv1d/Conv2d/Linear layers of "
            f"{type(model).__name__}: {list(layers)[:8]}... (all of them: dse.assignment.targetable_layers(model))."
        )


def targetable_layers(model: nn.Module) -> dict[str, TargetableLayer]:
    """Conv1d, Conv2d and Linear layers of ``model`` by qualified name, in definition order (not those
    inside an unemulated layer, which calls their weights directly)."""
    inside = tuple(f"{name}." for name in unemulated_layers(model))
    return {
        name: m  # type: ignore[misc]
        for name, m in model.named_modules()
        if isinstance(m, TARGETABLE_TYPES) and not name.startswith(inside)
    }


def unemulated_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers of :data:`UNEMULATED_TYPES` (outermost only) by qualified name: float32 in every candidate."""
    found: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if isinstance(m, UNEMULATED_TYPES) and not any(name.startswith(f"{outer}.") for outer in found):
            found[name] = m
    return found


def layer_kind(module: nn.Module) -> str:
    """What a targetable layer is, for grouping and cost tables: linear, depthwise, grouped, pointwise or conv;
    a matrix of an unrolled recurrent layer (:mod:`dse.emulation.recurrent`): input_to_hidden,
    hidden_to_hidden or projection."""
    if isinstance(module, nn.Linear):
        return str(getattr(module, "recurrent_role", "linear"))
    assert isinstance(module, (nn.Conv1d, nn.Conv2d))
    if module.groups > 1:
        return "depthwise" if module.groups == module.in_channels else "grouped"
    return "pointwise" if all(k == 1 for k in module.kernel_size) else "conv"


def assignment_key(assignment: Assignment) -> str:
    """A canonical string for an assignment: equal keys mean identical models."""
    parts = [
        f"{name}=" + ",".join(f"{k}:{v}" for k, v in cfg.as_dict().items() if v is not None)
        for name, cfg in sorted(assignment.items())
        if not cfg.is_exact
    ]
    return ";".join(parts) or "exact"


BASELINE_KEY = assignment_key({})  # the all-exact model's key: the baseline trial of every study


def needs_activation_ranges(assignment: Assignment) -> bool:
    """Whether applying ``assignment`` quantizes some layer's inputs (a multiplier or an activation
    format), and so needs calibrated activation ranges."""
    return any(cfg.multiplier or cfg.activation_format for cfg in assignment.values())
