"""The sensitivity command, for real, on the tiny CNN and a small subset."""

from pathlib import Path

import pandas as pd
import pytest

from dse.sensitivity import run_sensitivity
from tests.conftest import FAST, compose_config


@pytest.mark.slow
def test_decimal_places_sensitivity_per_group(workdir: Path) -> None:
    cfg = compose_config(["study=quickstart", "sensitivity.values=[1,4]", *FAST])
    table = run_sensitivity(cfg)
    assert sorted(table["unit"].unique()) == ["classifier", "depthwise", "first_conv", "pointwise"]
    assert len(table) == 8
    by = table.set_index(["unit", "value"])["accuracy_drop_points"]
    assert by[("depthwise", 1)] > by[("depthwise", 4)]  # coarser rounding hurts more
    assert abs(by[("classifier", 4)]) <= 1.0  # 4 decimal places barely move the classifier
    assert (workdir / "sensitivity" / "sensitivity_decimals.png").stat().st_size > 5_000
    assert pd.read_csv(workdir / "sensitivity" / "sensitivity_decimals.csv").shape[0] == 8


def test_unknown_knob(workdir: Path) -> None:
    from dse.exceptions import ConfigError

    with pytest.raises(ConfigError, match="not a layer knob"):
        run_sensitivity(compose_config(["study=quickstart", "sensitivity.knob=color"]))
