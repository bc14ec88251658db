"""The numeric docstring examples are real numbers: run them."""

import doctest
import importlib

import pytest

MODULES = ["dse.numerics.decimal_places", "dse.tracking.pareto", "dse.training.cifar10"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
