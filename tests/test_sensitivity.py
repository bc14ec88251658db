"""The sensitivity command, for real, on the tiny CNN and a small subset."""

from pathlib import Path

import pandas as pd
import pytest

from dse.exceptions import ConfigError
from dse.search import run_search
from dse.sensitivity import run_sensitivity
from tests.conftest import FAST, compose_config


@pytest.mark.slow
def test_decimal_places_sensitivity_per_group(workdir: Path) -> None:
    cfg = compose_config(["study=quickstart", "sensitivity.values=[1,4]", *FAST], "sensitivity")
    table = run_sensitivity(cfg)
    assert sorted(table["unit"].unique()) == ["classifier", "depthwise", "first_conv", "pointwise"]
    assert len(table) == 8
    by = table.set_index(["unit", "value"])["accuracy_drop_points"]
    assert by[("depthwise", 1)] > by[("depthwise", 4)]  # coarser rounding hurts more
    assert abs(by[("classifier", 4)]) <= 1.0  # 4 decimal places barely move the classifier
    assert (workdir / "sensitivity" / "sensitivity_decimals.png").stat().st_size > 5_000
    assert pd.read_csv(workdir / "sensitivity" / "sensitivity_decimals.csv").shape[0] == 8

    # The search skips what the table shows is harmful on its own, and never offers it.
    csv = "pruning.table=sensitivity/sensitivity_decimals.csv"
    result = run_search(
        compose_config(["study=quickstart", "study.n_trials=4", csv, "pruning.max_drop_points=1.0", *FAST])
    )
    harmful = {f"decimals.{u}" for (u, v), drop in by.items() if v == 1 and drop > 1.0}
    assert harmful, "d=1 should cost more than a point somewhere on the tiny CNN"
    choices = result.study.user_attrs["space_choices"]
    for name in harmful:
        assert choices[name] == ["2", "3", "4", "5", "6", "7", "8", "9", "exact"]
    assert all(t.params.get(n) != 1 for t in result.study.trials for n in harmful)
    # Resuming the study with another threshold would change its choices: refused up front.
    with pytest.raises(ConfigError, match="pruning"):
        run_search(compose_config(["study=quickstart", "study.n_trials=5", csv, "pruning.max_drop_points=100", *FAST]))


def test_unknown_knob(workdir: Path) -> None:
    with pytest.raises(ConfigError, match="not a layer knob"):
        run_sensitivity(compose_config(["study=quickstart", "sensitivity.knob=color"], "sensitivity"))
