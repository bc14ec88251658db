"""The numeric docstring examples are real numbers: run every one of them."""

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"dse": ROOT / "dse", "dse.training": ROOT / "training", "dse.search_spaces": ROOT / "search_spaces"}


def modules_with_examples() -> list[str]:
    """Every module of dse (and its training/search_spaces packages) whose source holds a ``>>>`` example."""
    names = []
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            if ">>>" in path.read_text():
                parts = path.relative_to(folder).with_suffix("").parts
                names.append(".".join((package, *parts)).removesuffix(".__init__"))
    return names


def test_the_examples_are_found() -> None:
    found = set(modules_with_examples())
    assert {"dse.numerics.formats", "dse.multipliers._mitchell", "dse.emulation._factorization"} <= found


@pytest.mark.parametrize("name", modules_with_examples())
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
