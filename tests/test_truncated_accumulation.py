"""Approximate accumulation (``<multiplier>_acct<t>``): each product's t low bits dropped before an exact sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dse.assignment import LayerConfig
from dse.candidates.transform import apply_assignment
from dse.exceptions import ConfigError
from dse.multipliers import TruncatedAccumulation, get_multiplier


@pytest.mark.parametrize("base", ["exact_s8", "mitchell_w6_s8", "mul8s_1L2J"])
@pytest.mark.parametrize("t", [1, 4, 8])
def test_the_table_is_the_base_products_rounded_down_to_a_multiple_of_two_to_the_t(base: str, t: int) -> None:
    m = get_multiplier(f"{base}_acct{t}")
    products = get_multiplier(base).table()
    expected = np.floor(products / 2**t).astype(np.int64) * 2**t  # two's complement truncation: toward -inf
    assert isinstance(m, TruncatedAccumulation) and m.name == f"{base}_acct{t}"
    assert np.array_equal(m.table(), expected)
    assert (m.table() % 2**t == 0).all() and (m.table() <= products).all()
    assert m.power_ratio == get_multiplier(base).power_ratio  # the adder's saving is not priced


def test_no_bit_dropped_is_the_base_multiplier() -> None:
    assert np.array_equal(get_multiplier("mitchell_w6_s8_acct0").table(), get_multiplier("mitchell_w6_s8").table())


def test_a_layer_on_truncated_accumulation_is_emulated_bit_exactly_and_only_lowers_its_sums() -> None:
    """A conv on exact_s8_acct6: dse's fast path equals the reference (one table lookup per product), and
    against exact accumulation every output moves down (each product floored, scales positive)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False)).eval()
    x = torch.rand(4, 3, 10, 10)  # non-negative inputs: the activations' zero point is their minimum
    ranges = {"0": (0.0, 1.0)}
    out = {}
    for name, path in (("exact_s8", "auto"), ("exact_s8_acct6", "auto"), ("exact_s8_acct6", "reference")):
        candidate = apply_assignment(model, {"0": LayerConfig(multiplier=name)}, ranges, path=path, per_channel=False)
        out[name, path] = candidate(x)
    assert torch.equal(out["exact_s8_acct6", "auto"], out["exact_s8_acct6", "reference"])
    lowered = out["exact_s8", "auto"] - out["exact_s8_acct6", "auto"]
    assert (lowered >= -1e-6).all() and lowered.max() > 0


def test_too_many_dropped_bits_are_refused_with_the_range() -> None:
    with pytest.raises(ConfigError, match=r"must be 0\.\.15"):
        get_multiplier("exact_s8_acct16")
    with pytest.raises(ConfigError, match="Unknown multiplier 'nothing_s8'"):
        get_multiplier("nothing_s8_acct2")
