"""Files that ship with dse (trained weights, the evaluation subset), by name.

Configs name a shipped file (``weights: mobilenet_v2_cifar10``) instead of a
path, so they work from any working directory and from an installed wheel.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ASSETS_DIR", "SHIPPED", "resolve_asset"]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

# name -> file in ASSETS_DIR (model cards: ASSETS_DIR / "MODEL_CARD.md").
SHIPPED = {
    "mobilenet_v2_cifar10": "mobilenet_v2_cifar10.pt",
    "tiny_cnn_cifar10": "tiny_cnn_cifar10.pt",
    "gru_japanese_vowels": "gru_japanese_vowels.pt",
    "cifar10_test_subset": "cifar10_test_subset.npz",
}


def resolve_asset(spec: str | Path) -> Path:
    """A shipped file's path for its name; anything else is taken as a path."""
    if str(spec) in SHIPPED:
        return ASSETS_DIR / SHIPPED[str(spec)]
    return Path(spec).expanduser()
