import csv

import numpy as np
import pytest

from dse.exceptions import ConfigError
from dse.multipliers import (
    DrumMultiplier,
    LutMultiplier,
    MitchellMultiplier,
    TruncatedMultiplier,
    get_multiplier,
    list_multipliers,
    operand_values,
)
from dse.multipliers._lut import EVOAPPROX_DIR

EVOAPPROX = sorted(n for n in list_multipliers() if n.startswith("mul8"))
with open(EVOAPPROX_DIR / "evoapprox_metrics.csv", newline="") as _f:
    METRICS = {r["name"]: r for r in csv.DictReader(_f)}


def test_all_25_evoapprox_circuits_are_registered() -> None:
    assert len(EVOAPPROX) == 25


@pytest.mark.parametrize("name", EVOAPPROX)
def test_evoapprox_error_stats_match_the_library(name: str) -> None:
    m, row = get_multiplier(name), METRICS[name]
    stats = m.error_stats()
    assert stats.mae == pytest.approx(float(row["calc_mae"]), abs=1e-6)
    assert stats.wce == int(row["calc_wce"])
    assert stats.bias == pytest.approx(float(row["calc_bias"]), abs=1e-6)
    assert stats.mre_pct == pytest.approx(float(row["calc_mre_pct"]), rel=1e-4, abs=1e-6)
    assert m.signed == (row["signedness"] == "signed")
    assert m.power_ratio == pytest.approx(float(row["lib_power_mW"]) / (0.425 if m.signed else 0.391))
    assert m.delay_ns == float(row["lib_delay_ns"])


@pytest.mark.parametrize("name", ["exact_s8", "exact_u8", "mul8s_1KV6", "mul8u_1JJQ", "truncated_t0_s8", "drum_k8_u8"])
def test_exact_tables_are_products(name: str) -> None:
    m = get_multiplier(name)
    v = operand_values(8, m.signed)
    assert np.array_equal(m.table(), np.outer(v, v)) and m.is_exact


def test_signed_table_is_indexed_by_twos_complement_byte() -> None:
    lut = get_multiplier("mul8s_1KV9").table()
    x, w = np.array([-3, 100], dtype=np.int8), np.array([7, -128], dtype=np.int8)
    products = lut[x.view(np.uint8), w.view(np.uint8)]
    assert abs(products[0] - (-21)) <= 17 and abs(products[1] - (-12800)) <= 17  # WCE of 1KV9 is 17


def test_mitchell_properties() -> None:
    m = MitchellMultiplier(w=7, signed=False)  # no truncation at 8 bits: classic Mitchell
    v = np.arange(256)
    exact, approx = np.outer(v, v), m.table()
    nz = exact > 0
    assert (approx <= exact).all()  # Mitchell never overestimates
    assert ((exact - approx)[nz] / exact[nz]).max() == pytest.approx(1 / 9)  # worst case 11.1% at x1 = x2 = 1/2
    assert (approx[exact == 0] == 0).all()
    assert (
        approx[[1, 2, 4, 8, 16, 32, 64, 128]][:, [1, 2, 4, 128]]
        == exact[[1, 2, 4, 8, 16, 32, 64, 128]][:, [1, 2, 4, 128]]
    ).all()
    s = MitchellMultiplier(w=6)
    assert s.multiply(np.array(-100), np.array(27)) == -s.multiply(np.array(100), np.array(27)) == -2560
    # priced from a published figure where one exists (8-bit Mitch-w6), never from a capped cell count
    assert s.mac_vs_bfloat16 == 0.2 and "10.1109/TETC.2021.3050989" in s.power_source and s.power_ratio is None
    for unpublished in (m, MitchellMultiplier(w=6, bits=10)):
        assert unpublished.mac_vs_bfloat16 is None and unpublished.power_ratio is None
        assert "no published figure" in unpublished.power_source


def test_mitchell_wider_operands() -> None:
    m = MitchellMultiplier(w=6, bits=12, signed=False)
    assert (
        int(m.multiply(np.array(1000), np.array(3000))) == 2_949_120
    )  # x1 = 61/64, x2 = 29/64 (6 kept bits): 2^(9+11+1) * (x1 + x2)
    assert int(m.multiply(np.array(1024), np.array(2048))) == 1024 * 2048  # powers of two are exact


@pytest.mark.parametrize("name", ["mitchell_w6_s16", "exact_u13", "truncated_t4_s1", "drum_k4_u32"])
def test_widths_emulation_cannot_take_fail_at_construction(name: str) -> None:
    with pytest.raises(ConfigError, match=r"operand width must be 2\.\.12 bits.*got (16|13|1|32)"):
        get_multiplier(name)


def test_truncation_and_drum_by_hand() -> None:
    assert int(TruncatedMultiplier(t=4, signed=False).multiply(np.array(15), np.array(15))) == 176
    assert int(TruncatedMultiplier(t=4).multiply(np.array(-15), np.array(15))) == -176
    # DRUM-4: 200 = 11001000b -> keep 1100, force lsb: 1101 << 4 = 208; 3 stays 3
    assert int(DrumMultiplier(k=4, signed=False).multiply(np.array(200), np.array(3))) == 624


def test_unknown_multiplier_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"Unknown multiplier 'mul8u_XYZ'.*mul8s_1KV6.*mitchell_w"):
        get_multiplier("mul8u_XYZ")


@pytest.mark.parametrize(
    ("lut", "message"),
    [
        (np.zeros((256, 128), dtype=np.int32), "shape"),
        (np.zeros((256, 256), dtype=np.float32), "dtype"),
        (np.zeros((100, 100), dtype=np.int32), "power-of-two"),
    ],
)
def test_bad_tables(lut: np.ndarray, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LutMultiplier(name="bad", lut=lut)


def test_own_table_by_path(tmp_path) -> None:
    v = operand_values(8, True)
    np.savez(tmp_path / "luts.npz", mine_s=(np.outer(v, v) + 1).astype(np.int32))
    m = get_multiplier(f"{tmp_path / 'luts.npz'}:mine_s")
    assert m.signed and m.error_stats().bias == 1.0
    with pytest.raises(ConfigError, match="has no circuit"):
        get_multiplier(f"{tmp_path / 'luts.npz'}:other")


def test_a_tables_signedness_comes_from_its_values_not_its_name(tmp_path) -> None:
    """The shipped mul8s_1KV9 saved under a name without ``8s_`` is still signed (read as unsigned it scores
    chance), an unsigned table named like a signed one is unsigned, and a declaration that contradicts the
    values, or a table that fits neither reading, is refused with how to declare it."""
    signed_table, unsigned_table = get_multiplier("mul8s_1KV9").table(), get_multiplier("mul8u_1SX").table()
    np.savez(tmp_path / "luts.npz", mine=signed_table, mul8s_trick=unsigned_table)
    mine = get_multiplier(f"{tmp_path / 'luts.npz'}:mine")
    assert mine.signed and np.array_equal(mine.table(), signed_table)
    assert mine.error_stats().mae == pytest.approx(get_multiplier("mul8s_1KV9").error_stats().mae)
    assert not get_multiplier(f"{tmp_path / 'luts.npz'}:mul8s_trick").signed
    (tmp_path / "flat").mkdir()
    np.savez(tmp_path / "flat" / "luts.npz", flat=np.zeros((256, 256), np.int32))
    with pytest.raises(ConfigError, match=r"'flat': its signedness cannot be told.*metrics.csv.*name,signedness"):
        get_multiplier(f"{tmp_path / 'flat' / 'luts.npz'}:flat")
    (tmp_path / "flat" / "metrics.csv").write_text("name,signedness\nflat,unsigned\n")
    assert not get_multiplier(f"{tmp_path / 'flat' / 'luts.npz'}:flat").signed  # declared: taken as said
    (tmp_path / "declared").mkdir()  # another file: get_multiplier caches a name once loaded
    np.savez(tmp_path / "declared" / "luts.npz", mine=signed_table)
    (tmp_path / "declared" / "metrics.csv").write_text("name,signedness\nmine,unsigned\n")
    with pytest.raises(ConfigError, match=r"'mine' is declared unsigned, but its values follow signed products"):
        get_multiplier(f"{tmp_path / 'declared' / 'luts.npz'}:mine")


@pytest.mark.parametrize(
    ("lut", "message"),
    [
        (np.zeros((256, 255), dtype=np.int32), r"shape \(256, 255\); it must be square"),
        (np.zeros((3, 3), dtype=np.int32), r"power-of-two side"),
        (np.full((256, 256), 0.5), r"dtype float64; it must hold integers"),
        (np.where(np.eye(256) > 0, np.nan, 1.0), r"256 NaN entries \(first at \(0, 0\)\)"),
        (np.full((256, 256), 2**17, dtype=np.int64), r"lut\[0, 0\] = 131072 is out of range for 8-bit operands"),
        (np.zeros((8192, 2), dtype=np.int32), r"square"),
    ],
)
def test_bad_tables_fail_at_load_time(lut: np.ndarray, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LutMultiplier(name="mine", lut=lut, signed=False)


def test_bad_table_file_fails_at_load_time_with_the_file_named(tmp_path) -> None:
    path = tmp_path / "luts.npz"
    np.savez(path, mine=np.full((16, 16), np.nan))
    with pytest.raises(ConfigError, match="NaN entries"):
        get_multiplier(f"{path}:mine")
