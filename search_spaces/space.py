"""A search space: knobs (what can change) at a granularity (which layers share a value).

A :class:`Knob` is one field of :class:`~dse.assignment.LayerConfig` and its
choices. A :class:`SearchSpace` applies its knobs uniformly (one value for all
targeted layers), per layer group, or per layer. :meth:`SearchSpace.bind`
resolves it against a model into a :class:`BoundSpace`, which turns Optuna
parameters into assignments and back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from torch import nn

from dse.assignment import LayerConfig
from dse.exceptions import ConfigError
from dse.multipliers import get_multiplier

from .layer_groups import check_layers, resolve_groups

__all__ = ["ARITHMETIC", "EXACT", "GRANULARITIES", "BoundSpace", "Knob", "SearchSpace"]

EXACT = "exact"  # the choice that leaves a knob at its exact default
GRANULARITIES = ("uniform", "group", "layer")
Choice = int | float | str


ARITHMETIC = "arithmetic"  # a knob over whole arithmetics: a multiplier, or weight/activation number formats


@dataclass(frozen=True)
class Knob:
    """One LayerConfig field and the values a trial may give it (``"exact"`` = default).

    The field ``arithmetic`` is a knob over several fields at once: each choice is a multiplier name
    (``mul8s_1KV9``: weights and activations at its operands) or number formats (``int6``: weights and
    activations; ``int4/int8``: weights / activations), so one parameter puts int6 beside an 8-bit
    approximate circuit on the same front.
    """

    field: str
    choices: tuple[Choice, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise ConfigError(f"Knob {self.field!r} has no choices.")
        if len(set(self.choices)) != len(self.choices):
            raise ConfigError(f"Knob {self.field!r} lists a choice twice: {list(self.choices)}.")
        for c in self.choices:  # validate by building the config once per choice
            self.layer_fields(c)

    def layer_fields(self, choice: Choice) -> dict[str, Any]:
        """The LayerConfig fields ``choice`` sets (validated by LayerConfig itself)."""
        if choice == EXACT:
            fields: dict[str, Any] = {}
        elif self.field == ARITHMETIC:
            fields = _arithmetic_fields(str(choice))
        else:
            fields = {self.field: choice}
        try:
            LayerConfig(**fields)
        except ConfigError as exc:
            if self.field != ARITHMETIC:
                raise
            raise ConfigError(
                f"space.choices: {choice!r} is neither a multiplier (dse.multipliers.list_multipliers(), or "
                f"path/to/luts.npz:<name>) nor number formats (int8, int6, fp8_e4m3, bf16, ...; weights/activations "
                f"apart as int4/int8): {exc}"
            ) from exc
        return fields

    @property
    def fields(self) -> tuple[str, ...]:
        """The LayerConfig fields this knob sets."""
        if self.field == ARITHMETIC:
            return ("multiplier", "weight_format", "activation_format")
        return (self.field,)


def _arithmetic_fields(choice: str) -> dict[str, Any]:
    """``mul8s_1KV9`` -> its multiplier; ``int6`` -> weights and activations in int6; ``int4/int8`` -> each."""
    weight, _, activation = choice.partition("/")
    try:
        get_multiplier(choice)
    except ConfigError:
        return {"weight_format": weight, "activation_format": activation or weight}
    return {"multiplier": choice}


@dataclass(frozen=True)
class BoundSpace:
    """A search space resolved against one model: Optuna parameter name -> (knob, layers)."""

    params: Mapping[str, tuple[Knob, tuple[str, ...]]]

    @property
    def knob_fields(self) -> list[str]:
        """The LayerConfig fields this space searches (e.g. ``["decimals"]``)."""
        return sorted({f for knob, _ in self.params.values() for f in knob.fields})

    @property
    def layers(self) -> list[str]:
        return sorted({n for _, layers in self.params.values() for n in layers})

    def suggest(self, trial: optuna.Trial) -> dict[str, Choice]:
        return {name: self._suggest(trial, name, knob) for name, (knob, _) in self.params.items()}

    @staticmethod
    def _suggest(trial: optuna.Trial, name: str, knob: Knob) -> Choice:
        value = trial.suggest_categorical(name, list(knob.choices))
        assert value is not None  # every choice is a number or a string
        return value

    def assignment(self, params: Mapping[str, Any]) -> dict[str, LayerConfig]:
        """The per-layer assignment that parameters ``params`` describe."""
        fields: dict[str, dict[str, Any]] = {}
        for name, (knob, layers) in self.params.items():
            values = knob.layer_fields(params.get(name, EXACT))
            for layer in layers:
                fields.setdefault(layer, {}).update(values)
        return {layer: LayerConfig(**f) for layer, f in fields.items()}

    def baseline_params(self) -> dict[str, Choice]:
        """Every parameter at exact: the reference configuration."""
        missing = [name for name, (knob, _) in self.params.items() if EXACT not in knob.choices]
        if missing:
            raise ConfigError(f"Parameters {missing} have no 'exact' choice, so the baseline cannot be enqueued.")
        return {name: EXACT for name in self.params}

    def uniform_params(self) -> list[dict[str, Choice]]:
        """One assignment per choice, given to every parameter that has it (the rest exact): "all layers
        at d" for each d. A study can start from these (``study.seed_uniform``)."""
        choices = list(dict.fromkeys(c for knob, _ in self.params.values() for c in knob.choices if c != EXACT))
        return [{name: (c if c in knob.choices else EXACT) for name, (knob, _) in self.params.items()} for c in choices]

    def grid(self) -> dict[str, list[Choice]]:
        return {name: list(knob.choices) for name, (knob, _) in self.params.items()}

    @property
    def size(self) -> int:
        """Number of distinct parameter combinations."""
        return math.prod(len(knob.choices) for knob, _ in self.params.values())


@dataclass
class SearchSpace:
    """Knobs applied at a granularity to some of a model's layers.

    Args:
        knobs: what can change.
        granularity: ``uniform`` (one value for every targeted layer), ``group``
            (one per layer group), or ``layer`` (one per layer).
        groups: the model's layer groups to target (``model.layer_groups``); None = all.
        layers: explicit layer names (``granularity: layer`` only); None = the groups' layers.
    """

    knobs: Sequence[Knob]
    granularity: Literal["uniform", "group", "layer"] = "group"
    groups: Sequence[str] | None = None
    layers: Sequence[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"Unknown granularity {self.granularity!r}; choose one of {list(GRANULARITIES)}.")
        if self.layers is not None and self.granularity != "layer":
            raise ConfigError("space.layers lists layer names, which needs granularity: layer.")

    def bind(self, model: nn.Module, layer_groups: Mapping[str, str]) -> BoundSpace:
        """Resolve groups/layers against ``model`` and name one Optuna parameter per knob and unit."""
        if self.layers is not None:
            units = {name: [name] for name in check_layers(model, self.layers)}
        else:
            groups = resolve_groups(model, layer_groups, self.groups)
            if self.granularity == "uniform":
                units = {"": [n for members in groups.values() for n in members]}
            elif self.granularity == "group":
                units = groups
            else:
                units = {n: [n] for members in groups.values() for n in members}
        params = {
            (knob.field if unit == "" else f"{knob.field}.{unit}"): (knob, tuple(layers))
            for knob in self.knobs
            for unit, layers in units.items()
        }
        return BoundSpace(params)
