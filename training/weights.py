"""Trained weights: the checkpoints shipped with dse, and loading any other.

A weights spec is either the name of a shipped checkpoint (``list_weights()``)
or a path to a ``.pt`` file holding a ``state_dict`` (or a Lightning ``.ckpt``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dse.exceptions import CheckpointError
from dse.training.assets import SHIPPED, resolve_asset

__all__ = ["list_weights", "load_weights", "resolve_weights", "save_weights"]


def list_weights() -> list[str]:
    """Names of the checkpoints that ship with dse."""
    return sorted(name for name, file in SHIPPED.items() if file.endswith(".pt"))


def resolve_weights(spec: str) -> Path:
    """The file behind a weights spec (a shipped name or a path)."""
    path = resolve_asset(spec)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {spec!r} not found (looked at {str(path)!r}). Use a shipped name "
            f"({', '.join(list_weights())}) or a path to a .pt state_dict; train one with "
            "`python -m dse.training.train`."
        )
    return path


def load_weights(model: nn.Module, spec: str) -> nn.Module:
    """Load ``spec`` into ``model`` strictly (every key must match) and return it."""
    path = resolve_weights(spec)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"Checkpoint {str(path)!r} is corrupt or not a torch file: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint
        state = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
    if not isinstance(state, dict):
        raise CheckpointError(f"Checkpoint {str(path)!r} holds a {type(state).__name__}, not a state_dict.")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not fit the model {type(model).__name__}: {exc}. "
            "Check that model= and the checkpoint belong together."
        ) from exc
    return model


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save ``model``'s state_dict (contiguous, CPU) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path
