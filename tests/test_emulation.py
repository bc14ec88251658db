import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dse.assignment import LayerConfig
from dse.candidates.transform import apply_assignment
from dse.emulation import ApproxConv2d, ApproxLinear, approximate_layer, calibrate_ranges
from dse.emulation._separable import SeparableProducts
from dse.exceptions import ConfigError, SearchSpaceError
from dse.multipliers import LutMultiplier, get_multiplier, list_multipliers, operand_values
from dse.testing import SHAPES, emulated_pair, make_layer
from dse.training.models import get_model

EVOAPPROX = sorted(n for n in list_multipliers() if n.startswith("mul8"))
LOW_RANK = [
    n
    for n in [*EVOAPPROX, "truncated_t6_s8", "drum_k4_s8", "exact_s8", "exact_u8"]
    if SeparableProducts.usable(get_multiplier(n).table(), operand_values(8, get_multiplier(n).signed))
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("multiplier", ["mul8s_1KV9", "mul8s_1L2N", "mul8u_DG8", "mitchell_w6_s8", "truncated_t6_u8"])
def test_table_path_equals_reference(shape, multiplier: str) -> None:
    ref, fast = emulated_pair(shape, multiplier, ("reference", "table"))
    assert torch.equal(ref, fast)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("multiplier", LOW_RANK)
def test_separable_path_equals_reference(shape, multiplier: str) -> None:
    ref, fast = emulated_pair(
        shape, multiplier, ("reference", "separable"), seed=zlib.crc32(multiplier.encode()) % 1000
    )  # stable across processes
    assert torch.equal(ref, fast)


def _random_table(signed: bool, seed: int) -> LutMultiplier:
    """A full-rank table with entries over the whole 16-bit range, asymmetric (operand order matters)."""
    rng = np.random.default_rng(seed)
    lo, hi = (-(2**15), 2**15) if signed else (0, 2**16)
    lut = rng.integers(lo, hi, size=(256, 256), dtype=np.int64)
    return LutMultiplier(name=f"random_{'s' if signed else 'u'}8_{seed}", lut=lut, signed=signed)


KERNEL_TABLES = [
    *EVOAPPROX,
    *[f"mitchell_w{w}_{s}8" for w in range(2, 9) for s in "su"],
    "truncated_t6_u8",
    "drum_k4_s8",
    "exact_s8",
    "exact_u8",
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("multiplier", KERNEL_TABLES)
def test_kernel_path_equals_reference(shape, multiplier: str) -> None:
    ref, fast = emulated_pair(shape, multiplier, ("reference", "kernel"), seed=zlib.crc32(multiplier.encode()) % 1000)
    assert torch.equal(ref, fast)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_kernel_path_equals_reference_on_random_full_rank_tables(shape, signed: bool) -> None:
    table = _random_table(signed, seed=7)
    assert np.linalg.matrix_rank(table.error_table().astype(np.float64)) == 256
    ref, fast = emulated_pair(shape, table, ("reference", "kernel"))
    assert torch.equal(ref, fast)


@pytest.mark.parametrize("variant", [0, 1, 2], ids=["scalar", "avx2", "avx512vbmi"])
@pytest.mark.parametrize("name", ["mul8s_1KV9", "mul8u_DG8", "mitchell_w6_s8", "random_s", "random_u"])
def test_every_cpu_variant_of_the_kernel_is_exact(variant: int, name: str) -> None:
    """The kernel's variants (forced; one this CPU lacks falls back to the best it has) agree bit for bit."""
    from dse.emulation._kernel import KernelTables, kernel_conv2d, load_kernel
    from dse.emulation.reference import lut_conv2d_reference

    module = load_kernel()
    assert module is not None, "the kernel must build here (gcc, g++ and ninja are installed by .ci/run)"
    mult = _random_table(name == "random_s", 3) if name.startswith("random") else get_multiplier(name)
    tables = KernelTables(mult.table(), mult.signed)
    gen = torch.Generator().manual_seed(variant)
    for n, c, h, w, o, k, s, d, g in [
        (3, 8, 9, 7, 6, 3, 1, 1, 1),
        (2, 6, 10, 10, 6, 3, 2, 1, 6),
        (1, 16, 4, 5, 32, 1, 1, 1, 1),
        (2, 4, 11, 9, 8, 3, 2, 2, 1),
        (65, 3, 1, 1, 2, 1, 1, 1, 1),
    ]:
        x = torch.randint(0, 256, (n, c, h, w), generator=gen)
        wt = torch.randint(0, 256, (o, c // g, k, k), generator=gen)
        ref = lut_conv2d_reference(x, wt, torch.from_numpy(mult.table()), (s, s), (d, d), g)
        sums, x_sums = kernel_conv2d(module, x, wt, tables, (s, s), (d, d), g, variant, with_xsum=True)
        assert torch.equal(sums.long(), ref)
        ones = torch.ones(g, c // g, k, k, dtype=torch.float64)
        assert torch.equal(x_sums.double(), F.conv2d(x.double(), ones, None, s, 0, d, g))


def test_auto_takes_the_kernel_on_cpu_except_where_no_lookup_is_needed() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1)
    assert approximate_layer(conv, "mitchell_w6_s8").path == "kernel"
    assert approximate_layer(conv, "mul8u_DG8").path == "kernel"
    assert approximate_layer(conv, "mul8s_1L2J").path == "separable"  # floor(x/2) * g(w): no lookup at all
    assert approximate_layer(conv, "mul8s_1KV9", path="table").path == "table"


def test_without_a_compiler_the_layers_warn_once_and_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without gcc/ninja: one clear warning, then the PyTorch paths, bit for bit."""
    import warnings

    from dse.emulation import _kernel

    def no_compiler() -> None:
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(_kernel, "_STATE", {})
    monkeypatch.setattr(_kernel, "_build", no_compiler)
    layer, x = make_layer(SHAPES[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = [approximate_layer(layer, name) for name in ("mitchell_w6_s8", "mul8u_DG8", "mul8s_1KV9")]
    messages = [str(w.message) for w in caught if issubclass(w.category, _kernel.KernelUnavailableWarning)]
    assert len(messages) == 1 and "Ninja is required" in messages[0] and "bit-exact all the same" in messages[0]
    for approx, name in zip(layers, ("mitchell_w6_s8", "mul8u_DG8", "mul8s_1KV9"), strict=True):
        assert approx.path in ("table", "separable", "arithmetic")  # Mitchell: by arithmetic
        reference = approximate_layer(layer, name, path="reference")
        for a in (approx, reference):
            a.set_activation_range(float(x.min()), float(x.max()))
        assert torch.equal(approx(x), reference(x)), name


def test_every_shipped_table_is_emulated_exactly_by_auto() -> None:
    shape = SHAPES[0]
    for name in EVOAPPROX:
        ref, fast = emulated_pair(shape, name, ("reference", "auto"))
        assert torch.equal(ref, fast), name


def test_large_reduction_stays_exact() -> None:
    """K = 1280 inputs exceeds float32's exact range for worst-case sums: chunks keep it exact."""
    layer, x = nn.Linear(1280, 4), torch.randn(3, 1280).abs() * 5
    for name in ("mul8s_1L2N", "exact_u8"):
        outs = []
        for path in ("reference", "separable", "table"):
            a = approximate_layer(layer, name, path=path)
            a.set_activation_range(0.0, float(x.max()))
            outs.append(a(x))
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("signed", [True, False])
def test_exact_multiplier_is_plain_integer_quantized_inference(signed: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1)
    x = torch.randn(2, 6, 9, 9)
    layer = approximate_layer(conv, "exact_s8" if signed else "exact_u8")
    layer.set_activation_range(float(x.min()), float(x.max()))
    # independent integer reference: quantize by hand, int64 convolution of (q - zero point)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    w = conv.weight.detach().reshape(5, -1)
    if signed:
        sx, zx = max(hi, -lo) / 127, 0.0
        sw, zw = w.abs().max(1).values / 127, torch.zeros(5)
        xq = torch.clamp(torch.round(x / sx), -128, 127)
        wq = torch.clamp(torch.round(conv.weight / sw.view(-1, 1, 1, 1)), -128, 127)
    else:
        sx = (hi - lo) / 255
        zx = float(round(-lo / sx))
        wlo, whi = w.min(1).values.clamp(max=0), w.max(1).values.clamp(min=0)
        sw = (whi - wlo) / 255
        zw = torch.round(-wlo / sw)
        xq = torch.clamp(torch.round(x / sx) + zx, 0, 255)
        wq = torch.clamp(torch.round(conv.weight / sw.view(-1, 1, 1, 1)) + zw.view(-1, 1, 1, 1), 0, 255)
    xq_pad = F.pad(xq, (1, 1, 1, 1), value=zx)
    acc = F.conv2d((xq_pad - zx).double(), (wq - zw.view(-1, 1, 1, 1)).double(), stride=2).round().long()
    expected = (acc.float() * (sx * sw.double()).float().view(1, -1, 1, 1)) + conv.bias.view(1, -1, 1, 1)
    got = layer(x)
    assert torch.allclose(got, expected.detach(), rtol=0, atol=1e-5)
    # and it approximates the float layer within the quantization error
    assert (got - conv(x)).abs().max() < 0.1


def test_asymmetric_table_fixes_operand_order() -> None:
    """lut[a, b] = a*b + a: swapping activation and weight would change the result."""
    v = operand_values(8, True)
    lut = (np.outer(v, v) + v[:, None]).astype(np.int32)
    mult = LutMultiplier(name="asym_s8", lut=lut, signed=True)
    linear = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[0.5, -1.0, 0.25]]))
    layer = ApproxLinear.from_linear(linear, mult, path="reference")
    layer.set_activation_range(-1.0, 1.0)
    x = torch.tensor([[1.0, 0.5, -1.0]])
    xq = torch.round(x * 127)  # activation scale 1/127
    wq = torch.round(linear.weight / (1.0 / 127))
    acc = (xq * wq).sum() + xq.sum()  # + a, the activation operand
    assert layer(x).item() == pytest.approx(acc.item() / 127 / 127, rel=1e-6)
    for path in ("separable", "table"):
        other = ApproxLinear.from_linear(linear, mult, path=path)
        other.set_activation_range(-1.0, 1.0)
        assert torch.equal(other(x), layer(x))


def test_calibrated_range_is_frozen_so_batch_composition_does_not_matter() -> None:
    layer, x = make_layer(SHAPES[0])
    approx = approximate_layer(layer, "mul8s_1L2J")
    approx.set_activation_range(-3.0, 3.0)
    assert torch.equal(approx(x)[:1], approx(x[:1]))
    assert torch.equal(approx(x)[1:], approx(x[1:] * 1.0))


def test_state_dict_compatibility() -> None:
    conv = nn.Conv2d(4, 4, 3, padding=1)
    layer = ApproxConv2d.from_conv(conv, "mul8s_1KV9")
    assert set(layer.state_dict()) == set(conv.state_dict()) | {"act_range"}
    assert torch.equal(layer.weight, conv.weight)
    fresh = ApproxConv2d(4, 4, 3, padding=1, multiplier="mul8s_1KV9")
    fresh.load_state_dict(conv.state_dict())  # an original state_dict loads, strict
    assert torch.equal(fresh.weight, conv.weight) and not fresh.calibrated
    layer.set_activation_range(-1, 2)
    fresh.load_state_dict(layer.state_dict())
    assert fresh.act_range.tolist() == [-1.0, 2.0]


def test_apply_assignment_changes_only_named_layers() -> None:
    model = get_model("tiny_cnn").eval()
    x = torch.randn(4, 3, 32, 32)
    names = ["features.1.0", "classifier"]
    ranges = calibrate_ranges(model, [x], names)
    changed = apply_assignment(
        model,
        {"features.1.0": LayerConfig(multiplier="mul8s_1KVP"), "classifier": LayerConfig(multiplier="mitchell_w6_s8")},
        ranges,
    )
    assert isinstance(changed.features[1][0], ApproxConv2d) and isinstance(changed.classifier, ApproxLinear)
    assert changed.classifier.path == "kernel" and changed.features[1][0].path == "kernel"  # auto on CPU
    assignment = {"features.1.0": LayerConfig(multiplier="mul8s_1KVP")}
    forced = apply_assignment(model, assignment, ranges, path="separable", per_channel=False)
    assert forced.features[1][0].path == "separable" and forced.features[1][0].per_channel is False
    before, after = model.state_dict(), changed.state_dict()
    assert set(after) == set(before) | {"features.1.0.act_range", "classifier.act_range"}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(model.features[1][0]) is nn.Conv2d  # the original is untouched
    out = changed(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    with pytest.raises(SearchSpaceError, match="no calibrated activation range"):
        apply_assignment(model, {"classifier": LayerConfig(multiplier="mul8s_1KV9")})


def test_bad_inputs_name_the_layer() -> None:
    conv = nn.Conv2d(3, 3, 3)
    with pytest.raises(ConfigError, match=r"'features.3' is quantized to 4 bits.*8-bit operands"):
        approximate_layer(conv, "mul8s_1KV9", name="features.3", bits=4)
    with pytest.raises(ConfigError, match=r"'features.3' feeds unsigned operands.*signed"):
        approximate_layer(conv, "mul8s_1KV9", name="features.3", signed=False)
    with pytest.raises(ConfigError, match="Unknown multiplier"):
        LayerConfig(multiplier="mul8u_XYZ")
    layer = approximate_layer(conv, "mul8s_1KV9", name="features.3")
    with pytest.raises(RuntimeError, match=r"'features\.3' has no calibrated activation range"):
        layer(torch.randn(1, 3, 5, 5))


def test_non_finite_activations_do_not_crash() -> None:
    layer = approximate_layer(nn.Conv2d(2, 2, 3), "mul8s_1L12")
    layer.set_activation_range(-1, 1)
    x = torch.randn(1, 2, 5, 5)
    x[0, 0, 0, 0], x[0, 1, 1, 1] = float("nan"), float("inf")
    out = layer(x)
    assert torch.isfinite(out).all()
    clean = x.clone()
    clean[0, 0, 0, 0], clean[0, 1, 1, 1] = 0.0, 1.0  # NaN -> the zero point, +inf -> the top of the range
    assert torch.equal(out, layer(clean))


@pytest.mark.parametrize("multiplier", ["mul8s_1L2N", "mul8s_1L2J", "exact_s8"])
def test_wide_pointwise_conv_is_chunked_exactly(multiplier: str) -> None:
    """Cin = 512: the fused path must split its sum (1L2N's factors allow only ~70 channels per chunk)."""
    gen = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(512, 4, 1)
    x = torch.randn(2, 512, 5, 5, generator=gen).abs() * 4  # large, one-sided inputs: worst case for the bound
    outs = []
    for path in ("reference", "separable"):
        layer = approximate_layer(conv, multiplier, path=path)
        layer.set_activation_range(0.0, float(x.max()))
        outs.append(layer(x))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("multiplier", ["mul8s_1KV9", "mul8u_DG8"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_kernel_quantizes_exactly_like_the_reference(multiplier: str, layout: str) -> None:
    """The kernel quantizes the float input itself: NaN, +-inf, huge values, ties and either layout as quantize()."""
    layer, x = make_layer(SHAPES[0])
    x = x * 3
    x[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30])
    x[1, 1, 2, :3] = torch.tensor([0.5, 1.5, -2.5]) * 0.01  # ties land on x / scale = k + 0.5 for some scale
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    fast, reference = (approximate_layer(layer, multiplier, path=p) for p in ("kernel", "reference"))
    for a in (fast, reference):
        a.set_activation_range(-2.0, 2.5)
    assert fast.path == "kernel"
    assert torch.equal(fast(x), reference(x))


MITCHELL = [f"mitchell_w{w}_{s}8" for w in range(2, 9) for s in "su"]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("multiplier", [*MITCHELL, "mitchell_w6_bc_s8", "mitchell_w3_bc_u8"])
def test_mitchell_by_arithmetic_equals_the_table(shape, multiplier: str) -> None:
    ref, arith = emulated_pair(
        shape, multiplier, ("reference", "arithmetic"), seed=zlib.crc32(multiplier.encode()) % 97
    )
    assert torch.equal(ref, arith)


@pytest.mark.parametrize("name", ["mitchell_w6_s10", "mitchell_w9_u10", "mitchell_w4_s4"])
def test_mitchell_by_arithmetic_for_other_widths(name: str) -> None:
    """Operands wider than 8 bits have no kernel (its indices are bytes): auto computes Mitchell's product."""
    for shape in (SHAPES[0], SHAPES[2], SHAPES[7]):
        ref, fast = emulated_pair(shape, name, ("reference", "auto"))
        assert torch.equal(ref, fast)
    layer, _ = make_layer(SHAPES[0])
    expected = "arithmetic" if get_multiplier(name).bits > 8 else "kernel"
    assert approximate_layer(layer, name).path == expected


def test_arithmetic_path_is_only_for_mitchell() -> None:
    with pytest.raises(ConfigError, match=r"path 'arithmetic' computes Mitchell's product; 'mul8s_1KV9'"):
        approximate_layer(nn.Linear(4, 2), "mul8s_1KV9", path="arithmetic")
