"""Which layers a search space targets: model layer groups (regexes) resolved to names."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from torch import nn

from dse.assignment import targetable_layers
from dse.exceptions import SearchSpaceError

__all__ = ["check_layers", "resolve_groups"]


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
