"""Conformance checks shared by the tests of every multiplier and emulation path."""

from .emulation import SHAPES, ConvCase, emulated_pair, make_layer

__all__ = ["SHAPES", "ConvCase", "emulated_pair", "make_layer"]
