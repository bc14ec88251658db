"""Energy and latency of small models, computed by hand from the documented formulas."""

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from dse.assignment import LayerConfig
from dse.cost.energy import EnergyModel
from dse.cost.latency import LatencyModel
from dse.cost.macs import layer_shapes
from dse.exceptions import ConfigError
from tests.conftest import compose_config

HW = compose_config([]).hardware
C1 = (3.7 - 1.1) / (576 - 121)  # pJ per significand-bit product
C0 = 1.1 - 121 * C1


@pytest.fixture
def energy() -> EnergyModel:
    return instantiate(HW.energy)


def two_layers() -> nn.Module:
    # conv 3->4 3x3 pad 1 on 8x8: 8*8*4 outputs * 27 = 6912 MACs, 108 weights
    # linear 256 -> 10: 2560 MACs, 2560 weights
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(256, 10, bias=False))


def test_fp32_energy_by_hand(energy: EnergyModel) -> None:
    model = two_layers()
    shapes = layer_shapes(model, (3, 8, 8))
    e = energy.estimate(model, shapes, {})
    conv, lin = e["0"], e["2"]
    assert conv.multiply_pj == pytest.approx(6912 * 3.7) and conv.add_pj == pytest.approx(6912 * 0.9)
    assert conv.weight_memory_pj == pytest.approx(108 * 32 / 64 * 1300)
    assert conv.activation_memory_pj == pytest.approx((192 + 256) * 32 / 64 * 100)
    assert lin.total_pj == pytest.approx(2560 * 4.6 + 2560 * 0.5 * 1300 + (256 + 10) * 0.5 * 100)


def test_int8_and_e4m3_energy_by_hand(energy: EnergyModel) -> None:
    model = two_layers()
    shapes = layer_shapes(model, (3, 8, 8))
    int8 = energy.estimate(model, shapes, {"0": LayerConfig(weight_format="int8", activation_format="int8")})["0"]
    assert int8.multiply_pj == pytest.approx(6912 * 0.2) and int8.add_pj == pytest.approx(6912 * 0.1)
    assert int8.weight_memory_pj == pytest.approx(108 * 8 / 64 * 1300)
    assert int8.activation_memory_pj == pytest.approx(448 * 8 / 64 * 100)
    fp8 = energy.estimate(model, shapes, {"2": LayerConfig(weight_format="e4m3", activation_format="e4m3")})["2"]
    assert fp8.multiply_pj == pytest.approx(2560 * (C0 + C1 * 4 * 4))  # 3 mantissa bits + the hidden one
    assert fp8.add_pj == pytest.approx(2560 * 0.9)  # accumulation stays fp32
    assert fp8.weight_memory_pj == pytest.approx(2560 * 8 / 64 * 1300)
    # the fit reproduces both of Horowitz's float points
    assert energy.multiply_pj(energy._format_operand("fp16"), energy._format_operand("fp16")) == pytest.approx(1.1)
    assert energy.multiply_pj(energy._format_operand("fp32"), energy._format_operand("fp32")) == pytest.approx(3.7)


def test_approximate_multiplier_scales_by_power_ratio(energy: EnergyModel) -> None:
    model = two_layers()
    shapes = layer_shapes(model, (3, 8, 8))
    e = energy.estimate(model, shapes, {"0": LayerConfig(multiplier="mul8s_1L2N")})["0"]
    assert e.multiply_pj == pytest.approx(6912 * 0.2 * 0.126 / 0.425)  # EvoApprox: 0.126 mW vs exact 0.425 mW
    assert e.multiplier_delay_ns == 0.94  # EvoApprox PDK45 delay of mul8s_1L2N


@pytest.mark.parametrize("preset", ["horowitz_45nm", "horowitz_45nm_onchip"])
def test_mitch_w6_mac_is_priced_from_the_published_figure(preset: str) -> None:
    """Kim et al. (TETC 2022): a Mitch-w6 MAC saves up to 80% of a bfloat16 MAC's energy. dse's 8-bit
    Mitch-w6 MAC (multiply + int32 accumulate) is 20% of the preset's bfloat16 MAC (bf16 multiply + fp32 add);
    a Mitch-w without a published figure is priced as exact, and says so."""
    energy: EnergyModel = instantiate(compose_config([f"hardware={preset}"]).hardware.energy)
    model = two_layers()
    shapes = layer_shapes(model, (3, 8, 8))
    bf16_mac = (C0 + C1 * 8 * 8) + 0.9
    mitch = energy.estimate(model, shapes, {"0": LayerConfig(multiplier="mitchell_w6_s8")})["0"]
    assert mitch.multiply_pj + mitch.add_pj == pytest.approx(6912 * 0.2 * bf16_mac)
    assert mitch.add_pj == pytest.approx(6912 * 0.1)  # the accumulate stays an exact int32 addition
    with pytest.warns(UserWarning, match="'mitchell_w4_s8' has no power figure"):
        unpriced = energy.estimate(model, shapes, {"0": LayerConfig(multiplier="mitchell_w4_s8")})["0"]
    assert unpriced.multiply_pj == pytest.approx(6912 * 0.2)


def test_decimal_places_width(energy: EnergyModel) -> None:
    model = two_layers()
    shapes = layer_shapes(model, (3, 8, 8))
    bits = energy.estimate(model, shapes, {"0": LayerConfig(decimals=2)})["0"].weight_bits
    max_abs = float(model[0].weight.detach().abs().max())
    assert (
        bits == len(bin(2 * round(max_abs * 100) + 1)) - 2 or 2 ** (bits - 1) < 2 * round(max_abs * 100) + 1 <= 2**bits
    )


def test_latency_by_hand() -> None:
    model = two_layers()
    shapes = layer_shapes(model, (3, 8, 8))
    energy = instantiate(HW.energy)
    fixed = LatencyModel(pe_count=16, clock_ghz=0.5, memory_bandwidth_gbps=1.0, iso_area=False)
    t = fixed.estimate(shapes, energy.estimate(model, shapes, {}))
    assert t["0"] == pytest.approx(6912 / (16 * 0.5e9) + (108 * 32 + 448 * 32) / 8 / 1e9)
    iso = LatencyModel(pe_count=16, clock_ghz=0.5, memory_bandwidth_gbps=1.0, iso_area=True)
    t8 = iso.estimate(
        shapes, energy.estimate(model, shapes, {"0": LayerConfig(weight_format="int8", activation_format="int8")})
    )
    assert t8["0"] == pytest.approx(6912 / (16 * 3.7 / 0.2 * 0.5e9) + (108 * 8 + 448 * 8) / 8 / 1e9)
    # an EvoApprox circuit's delay caps the clock: 1 / 1.43 ns < 1 GHz would not bind at 0.5 GHz, does at 2 GHz
    fast = LatencyModel(clock_ghz=2.0)
    e = energy.estimate(model, shapes, {"0": LayerConfig(multiplier="mul8s_1KV9")})
    assert fast.clock_hz(e) == pytest.approx(1e9 / e["0"].multiplier_delay_ns)


def test_incomplete_preset_and_unknown_memory_level() -> None:
    preset = {k: v for k, v in OmegaConf.to_container(HW.energy).items() if k != "_target_"}
    del preset["fp16_mul_pj"]
    with pytest.raises(ConfigError, match=r"lacks \['fp16_mul_pj'\]"):
        EnergyModel(**preset)
    with pytest.raises(ConfigError, match="'hbm' is not a memory level"):
        EnergyModel(**{**preset, "fp16_mul_pj": 1.1, "weight_memory": "hbm"})
    with pytest.raises(ConfigError, match="pe_count must be > 0"):
        LatencyModel(pe_count=0)


def test_every_trial_carries_its_energy_by_component_and_they_add_up() -> None:
    """The four components are metrics of every trial (and so possible objectives); on the multiplier
    study's own config, a circuit of power ratio p on every layer lowers the compute energy by
    (1 - p) x the multiply energy, to rounding, and leaves the memory components alone."""
    from dse.candidates.evaluator import ENERGY_COMPONENTS, CandidateEvaluator
    from dse.config_building import build_trained_model, candidate_evaluator
    from dse.multipliers import get_multiplier
    from dse.objectives import TRIAL_METRICS

    cfg = compose_config(["study=mobilenet_cifar10_multipliers"])
    model = build_trained_model(cfg.model)
    candidates = candidate_evaluator(cfg, model)
    exact_int8 = {n: LayerConfig(multiplier="exact_s8") for n in candidates.shapes}
    circuit = get_multiplier("mul8s_1L2J")
    assert circuit.power_ratio is not None and 0 < circuit.power_ratio < 1
    approx = {n: LayerConfig(multiplier=circuit.name) for n in exact_int8}

    def costs(assignment: dict) -> dict:
        return CandidateEvaluator.costs(candidates.cost_table(model, assignment))

    exact, cheap = costs(exact_int8), costs(approx)
    assert set(ENERGY_COMPONENTS) | {"energy_compute_uj"} <= set(exact) and set(ENERGY_COMPONENTS) <= set(TRIAL_METRICS)
    assert sum(exact[c] for c in ENERGY_COMPONENTS) == pytest.approx(exact["energy_uj"], rel=1e-12)
    expected = (1 - circuit.power_ratio) * exact["energy_multiply_uj"]
    assert exact["energy_compute_uj"] - cheap["energy_compute_uj"] == pytest.approx(expected, rel=1e-9)
    for memory in ("energy_weight_memory_uj", "energy_activation_memory_uj"):
        assert cheap[memory] == pytest.approx(exact[memory], rel=1e-12)
