from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest
import torch

from dse.assignment import LayerConfig
from dse.candidates.transform import apply_assignment
from dse.exceptions import ConfigError
from dse.numerics.decimal_places import decimal_bits, round_to_decimals
from dse.training.models import get_model


def decimal_reference(values: np.ndarray, d: int) -> np.ndarray:
    """Round the exact float32 value with Python's decimal module, then take the nearest float32."""
    q = Decimal(1).scaleb(-d)
    return np.array([float(Decimal(float(v)).quantize(q, rounding=ROUND_HALF_EVEN)) for v in values], dtype=np.float32)


@pytest.mark.parametrize("d", range(1, 10))
def test_rounding_matches_decimal_arithmetic(d: int) -> None:
    gen = torch.Generator().manual_seed(d)
    w = torch.randn(3000, generator=gen) * torch.logspace(-4, 0.5, 3000)
    # exact ties at this d must go to even
    ties = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5], dtype=torch.float64) / 10**d
    w = torch.cat([w, ties.float()])
    ours = round_to_decimals(w, d).numpy()
    np.testing.assert_array_equal(ours, decimal_reference(w.numpy(), d))


def test_rounding_has_at_most_d_decimals() -> None:
    w = torch.randn(1000)
    r = round_to_decimals(w, 3).double()
    assert torch.allclose(r * 1000, torch.round(r * 1000), atol=1e-3)
    assert not torch.equal(r.float(), w)


def test_assignment_changes_only_named_layers_bit_exactly() -> None:
    model = get_model("mobilenet_v2_cifar").eval()
    target = "features.4.conv.1.0"
    changed = apply_assignment(model, {target: LayerConfig(decimals=2)})
    before, after = model.state_dict(), changed.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        if key == f"{target}.weight":
            np.testing.assert_array_equal(after[key].numpy(), round_to_decimals(before[key], 2).numpy())
            assert not torch.equal(after[key], before[key])
        else:
            assert torch.equal(after[key], before[key]), key
    # the original model is untouched
    assert torch.equal(model.state_dict()[f"{target}.weight"], before[f"{target}.weight"])


@pytest.mark.parametrize(
    ("max_abs", "d", "bits"), [(0.5, 1, 4), (0.5, 4, 14), (1.27, 2, 8), (0.0004, 3, 1), (3.0, 9, 33)]
)
def test_decimal_bits(max_abs: float, d: int, bits: int) -> None:
    # levels = 2 * round(max|w| * 10^d) + 1; bits = ceil(log2(levels))
    assert decimal_bits(max_abs, d) == bits


@pytest.mark.parametrize("bad", [0, 10, -1, 2.5, True])
def test_decimals_outside_range_are_rejected(bad: object) -> None:
    with pytest.raises(ConfigError, match="1 to 9"):
        LayerConfig(decimals=bad)  # type: ignore[arg-type]
