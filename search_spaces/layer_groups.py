"""Which layers a search space targets: model layer groups (regexes) resolved to names."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from torch import nn

from dse.assignment import layer_kind, targetable_layers
from dse.exceptions import SearchSpaceError

__all__ = ["check_layers", "groups_by_kind", "resolve_groups"]

# The order groups are listed in: the stem first, then the kinds of MobileNet/ResNet-style blocks, then a
# recurrent layer's matrices (dse.emulation.recurrent), then the classifier.
_KIND_ORDER = (
    "first_conv",
    "conv",
    "pointwise",
    "depthwise",
    "grouped",
    "input_to_hidden",
    "hidden_to_hidden",
    "projection",
    "linear",
)


def groups_by_kind(model: nn.Module) -> dict[str, str]:
    """Layer groups when a model config names none: the first convolution alone (it sees the raw
    input and is often the most sensitive), then one group per :func:`dse.assignment.layer_kind`;
    each an exact-name regex, so :func:`resolve_groups` reads them like a config's."""
    members: dict[str, list[str]] = {}
    for name, module in targetable_layers(model).items():
        kind = layer_kind(module)
        if kind in ("conv", "pointwise", "depthwise", "grouped") and "first_conv" not in members:
            kind = "first_conv"
        members.setdefault(kind, []).append(name)
    return {kind: "|".join(map(re.escape, members[kind])) for kind in _KIND_ORDER if kind in members}


def resolve_groups(
    model: nn.Module, layer_groups: Mapping[str, str], selected: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Map each selected group to the Conv2d/Linear layer names its regex fully matches.

    A group that matches nothing, an unknown group name, or a layer claimed by
    two groups is an error: silently targeting nothing is how a study lies.
    """
    names = list(targetable_layers(model))
    chosen = list(layer_groups) if selected is None else list(selected)
    unknown = [g for g in chosen if g not in layer_groups]
    if unknown:
        raise SearchSpaceError(
            f"Unknown layer group(s) {unknown}; the model defines {sorted(layer_groups)} "
            "(model.layer_groups in the model config)."
        )
    groups: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for group in chosen:
        try:
            pattern = re.compile(layer_groups[group])
        except re.error as exc:
            raise SearchSpaceError(f"Layer group {group!r}: invalid regex {layer_groups[group]!r} ({exc}).") from exc
        members = [n for n in names if pattern.fullmatch(n)]
        if not members:
            raise SearchSpaceError(
                f"Layer group {group!r} (regex {layer_groups[group]!r}) matches no Conv2d/Linear layer of "
                f"{type(model).__name__}; its layers are named like {names[:4]}. Fix model.layer_groups."
            )
        for n in members:
            if n in owner:
                raise SearchSpaceError(f"Layer {n!r} is in both group {owner[n]!r} and group {group!r}.")
            owner[n] = group
        groups[group] = members
    return groups


def check_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """Return ``layers`` if every name is a Conv2d/Linear layer of ``model``."""
    names = targetable_layers(model)
    missing = [n for n in layers if n not in names]
    if missing:
        raise SearchSpaceError(
            f"Search space names layer(s) {missing} that {type(model).__name__} lacks. "
            f"Its Conv2d/Linear layers: {list(names)[:6]}... (dse.assignment.targetable_layers(model))."
        )
    return list(layers)
