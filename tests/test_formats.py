import itertools

import pytest
import torch

from dse.exceptions import ConfigError
from dse.numerics.formats import FixedPoint, MiniFloat, parse_format


def representable(fmt: MiniFloat) -> torch.Tensor:
    """Every finite non-negative value of the format, decoded from its bit fields (FN: the all-ones
    exponent holds normals, its all-ones mantissa is NaN)."""
    values = set()
    top = 2**fmt.exp_bits - (0 if fmt.finite_only else 1)
    for e, m in itertools.product(range(top), range(2**fmt.man_bits)):
        if fmt.finite_only and e == top - 1 and m == 2**fmt.man_bits - 1:
            continue  # NaN
        if e == 0:
            values.add(m * 2.0 ** (fmt.emin - fmt.man_bits) if fmt.subnormals else 0.0)
        else:
            values.add((1 + m / 2**fmt.man_bits) * 2.0 ** (e - fmt.bias))
    return torch.tensor(sorted(values), dtype=torch.float64)


def nearest_even(x: torch.Tensor, grid: torch.Tensor, fmt: MiniFloat) -> torch.Tensor:
    """Brute force: the nearest grid value, ties to the one with an even mantissa."""
    out = []
    for v in x.double().tolist():
        a = abs(v)
        if a > fmt.max_finite:
            r = fmt.max_finite
        else:
            d = (grid - a).abs()
            best = d.min()
            cands = grid[d == best].tolist()
            if len(cands) == 1:
                r = cands[0]
            else:  # a tie: the even one has an even integer significand at its quantum

                def even(c: float) -> bool:
                    e = max(fmt.emin, int(torch.floor(torch.log2(torch.tensor(c))).item())) if c > 0 else fmt.emin
                    return round(c / 2.0 ** (e - fmt.man_bits)) % 2 == 0

                r = next(c for c in cands if even(c))
        out.append(r if v >= 0 else -r)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize(
    "fmt",
    [
        MiniFloat(4, 3),
        MiniFloat(5, 2),
        MiniFloat(3, 2),
        MiniFloat(2, 3),
        MiniFloat(2, 2),  # the 5-bit floats
        MiniFloat(3, 1),
        MiniFloat(2, 1),
        MiniFloat(4, 3, finite_only=True, name="e4m3fn"),
        MiniFloat(4, 3, subnormals=False),
    ],
    ids=lambda f: f.name + ("_ftz" if not f.subnormals else ""),
)
def test_minifloat_rounds_to_nearest_even_against_enumeration(fmt: MiniFloat) -> None:
    full = MiniFloat(fmt.exp_bits, fmt.man_bits, finite_only=fmt.finite_only)  # with subnormals
    grid = representable(full)
    gen = torch.Generator().manual_seed(0)
    samples = torch.cat(
        [
            torch.randn(3000, generator=gen) * fmt.max_finite / 8,
            torch.randn(2000, generator=gen) * fmt.min_normal * 2,  # the subnormal range
            grid.float(),
            -grid.float(),  # every representable value maps to itself
            ((grid[1:] + grid[:-1]) / 2).float(),  # every midpoint: a tie (exact in float32 for these formats)
        ]
    )
    got = fmt.round(samples).double()
    expected = nearest_even(samples, grid, full)
    if not fmt.subnormals:  # flush to zero: a result that would be subnormal becomes 0
        expected = torch.where(expected.abs() < fmt.min_normal, torch.zeros_like(expected), expected)
    assert torch.equal(got, expected)


def test_minifloat_special_values() -> None:
    e4m3, e4m3_inf = MiniFloat(4, 3), MiniFloat(4, 3, saturate=False)
    x = torch.tensor([float("nan"), float("inf"), -1e6, 1e-9])
    sat, inf = e4m3.round(x), e4m3_inf.round(x)
    assert torch.isnan(sat[0]) and torch.isnan(inf[0])
    assert sat[1:3].tolist() == [240.0, -240.0] and inf[1:3].tolist() == [float("inf"), float("-inf")]
    assert sat[3] == 0


def test_bfloat16_and_fp16_match_torch_casts() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(20000, generator=gen) * s for s in (1e-40, 1e-6, 1e-3, 1.0, 1e4)])
    x = x[x.abs() < 6e4]  # inside fp16's range: torch saturates to inf, we saturate to max
    assert torch.equal(parse_format("bf16").round(x), x.to(torch.bfloat16).float())
    assert torch.equal(parse_format("fp16").round(x), x.to(torch.float16).float())


@pytest.mark.parametrize(("name", "dtype"), [("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2)])
def test_fp8_formats_match_torch_s_own_fp8_types(name: str, dtype: torch.dtype) -> None:
    """OCP FP8 as used in practice, bit-exact against torch's float8 casts (an independent implementation),
    and every one of the 256 encodings torch decodes is a value of ours and maps to itself."""
    fmt = parse_format(name)
    assert isinstance(fmt, MiniFloat) and fmt.bits == 8
    decoded = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    finite = decoded[torch.isfinite(decoded)]
    assert finite.abs().max().item() == fmt.max_finite  # 448 (E4M3FN) or 57344 (E5M2)
    assert torch.equal(fmt.round(finite), finite)
    assert set(finite.abs().tolist()) == set(representable(fmt).tolist())
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(200_000, generator=gen) * torch.exp2(torch.randint(-24, 17, (200_000,), generator=gen).float())
    x = x[x.abs() <= fmt.max_finite]  # beyond it torch gives NaN/inf, ours saturates
    assert torch.equal(fmt.round(x), x.to(dtype).float())


@pytest.mark.parametrize("name", ["e3m2", "e2m3", "e2m2", "e3m1", "e4m3_pt", "fp8_e4m3", "fp8_e5m2"])
def test_scaled_minifloats_put_each_channel_s_largest_weight_in_the_top_binade(name: str) -> None:
    """A power-of-two scale per output channel (per tensor: ``_pt`` and FP8) chosen from the weights, as
    integers get theirs: small weights no longer underflow, nothing saturates, and the result is exactly
    the format's rounding of the scaled weights, scaled back."""
    fmt = parse_format(name)
    assert isinstance(fmt, MiniFloat)
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(16, 8, 3, 3, generator=gen) * torch.logspace(-4, -1, 16).view(-1, 1, 1, 1)  # channels 1e-4..0.1
    got = fmt.round_weight(w)
    per_channel = fmt.scaling == "channel"
    amax = w.abs().flatten(1).amax(1) if per_channel else w.abs().max().expand(16)
    scale = torch.exp2(torch.floor(torch.log2(fmt.max_finite / amax)))
    assert (amax * scale <= fmt.max_finite).all() and (amax * scale * 2 > fmt.max_finite).all()
    raw = MiniFloat(fmt.exp_bits, fmt.man_bits, finite_only=fmt.finite_only)
    expected = raw.round(w * scale.view(-1, 1, 1, 1)) / scale.view(-1, 1, 1, 1)
    assert torch.equal(got, expected)
    nonzero = (got != 0).flatten(1).float().mean(1)
    if per_channel:  # every channel keeps most of its weights, the smallest channel too
        assert nonzero.min() > 0.6
    if fmt.exp_bits <= 3:  # unscaled, the smallest channel underflows to zero whole (why e3m2 fell to chance)
        assert (parse_format(f"e{fmt.exp_bits}m{fmt.man_bits}_raw").round_weight(w)[0] == 0).all()


def test_scaled_activations_use_the_calibrated_range() -> None:
    fmt = parse_format("e3m2")
    x = torch.tensor([0.0, 0.01, -0.3, 0.5])
    scale = 2.0 ** torch.floor(torch.log2(torch.tensor(fmt.max_finite / 0.5))).item()  # range [-0.3, 0.5]
    assert torch.equal(fmt.round_activation(x, -0.3, 0.5), MiniFloat(3, 2).round(x * scale) / scale)
    assert fmt.needs_range and not parse_format("e3m2_raw").needs_range and parse_format("int5").needs_range


def test_fixed_point_per_channel_and_unsigned() -> None:
    w = torch.tensor([[0.7, -0.35, 0.1], [0.02, 0.01, -0.04]])
    r = FixedPoint(4).round_weight(w)
    assert r[0].tolist() == pytest.approx([0.7, -0.4, 0.1])  # scale 0.1, ties to even
    # scale 0.04/7: 0.02 -> 3.5 is a tie -> 4; 0.01 -> 1.75 -> 2
    assert r[1].tolist() == pytest.approx([4 * 0.04 / 7, 2 * 0.04 / 7, -0.04], rel=1e-6)
    u = FixedPoint(8, signed=False).round_activation(torch.tensor([0.0, 1.0, 6.0]), 0.0, 6.0)
    assert u.tolist() == pytest.approx([0.0, 42 * 6 / 255, 6.0])  # 1.0 / (6/255) = 42.5, a tie -> 42


@pytest.mark.parametrize("bad", ["e9m2", "e4m30", "int1", "int32", "fp8", "e1m2"])
def test_unrepresentable_formats_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_format(bad)


def test_formats_in_a_model() -> None:
    """Weights take their format in the copy; inputs are rounded on the way in; nothing else changes."""
    from dse.assignment import LayerConfig
    from dse.candidates.transform import apply_assignment
    from dse.emulation import calibrate_ranges
    from dse.training.models import get_model

    model = get_model("tiny_cnn").eval()
    x = torch.randn(2, 3, 32, 32)
    ranges = calibrate_ranges(model, [x], ["features.2.0"])
    changed = apply_assignment(
        model, {"features.2.0": LayerConfig(weight_format="e4m3", activation_format="int8")}, ranges
    )
    w = changed.features[2][0].weight
    assert torch.equal(w, parse_format("e4m3").round_weight(model.features[2][0].weight))  # scaled per channel
    seen = {}
    changed.features[2][0].register_forward_pre_hook(lambda m, i: seen.setdefault("x", i[0]))  # runs after rounding
    changed(x)
    lo, hi = ranges["features.2.0"]
    scale = max(hi, -lo) / 127
    assert torch.allclose(seen["x"] / scale, torch.round(seen["x"] / scale), atol=1e-3)  # on the int8 grid
    before, after = model.state_dict(), changed.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "features.2.0.weight")


def test_multiplier_and_format_together_is_refused() -> None:
    from dse.assignment import LayerConfig
    from dse.exceptions import SearchSpaceError

    with pytest.raises(SearchSpaceError, match="fixes its operand format"):
        LayerConfig(multiplier="mul8s_1KV9", weight_format="e4m3")
    with pytest.raises(ConfigError, match="Unknown number format 'fp8'"):
        LayerConfig(weight_format="fp8")
