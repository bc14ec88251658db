"""Conformance checks shared by the tests of every multiplier and emulation path."""

from .emulation import SHAPES, LayerShape, emulated_pair, make_layer

__all__ = ["SHAPES", "LayerShape", "emulated_pair", "make_layer"]
