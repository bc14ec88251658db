import optuna
import pandas as pd
import pytest
from hydra.utils import instantiate

from dse.assignment import LayerConfig
from dse.exceptions import ConfigError, SearchSpaceError
from dse.search_spaces import (
    EXACT,
    arithmetic_space,
    decimal_places_space,
    load_sensitivity,
    prune_space,
    resolve_groups,
)
from dse.training.models import get_model
from tests.conftest import compose_config

GROUPS = dict(compose_config(["study=mobilenet_cifar10"]).model.layer_groups)


@pytest.fixture(scope="module")
def mobilenet():
    return get_model("mobilenet_v2_cifar")


def test_paper_groups_cover_every_layer_once(mobilenet) -> None:
    bound = decimal_places_space("group").bind(mobilenet, GROUPS)
    sizes = {name: len(layers) for name, (_, layers) in bound.params.items()}
    # 1 stem, 16 expansions (block 1 has none), 17 depthwise, 17 projections, 1 last conv, 1 classifier
    assert sizes == {
        "decimals.first_conv": 1,
        "decimals.expansion": 16,
        "decimals.depthwise": 17,
        "decimals.projection": 17,
        "decimals.last_conv": 1,
        "decimals.classifier": 1,
    }
    assert len(bound.layers) == 53
    assert bound.size == 10**6


@pytest.mark.parametrize(("granularity", "n_params"), [("uniform", 1), ("group", 6), ("layer", 53)])
def test_granularity(mobilenet, granularity: str, n_params: int) -> None:
    bound = decimal_places_space(granularity).bind(mobilenet, GROUPS)
    assert len(bound.params) == n_params
    trial = optuna.create_study().ask()
    params = bound.suggest(trial)
    assignment = bound.assignment(params)
    assert set(assignment) == set(bound.layers)
    if granularity == "uniform":
        assert len({cfg.decimals for cfg in assignment.values()}) == 1


def test_assignment_from_params_and_baseline(mobilenet) -> None:
    bound = decimal_places_space("group", groups=["depthwise", "first_conv"]).bind(mobilenet, GROUPS)
    assignment = bound.assignment({"decimals.depthwise": 3, "decimals.first_conv": EXACT})
    assert assignment["features.2.conv.1.0"] == LayerConfig(decimals=3)
    assert assignment["features.0.0"] == LayerConfig()
    assert "features.2.conv.0.0" not in assignment  # expansion is not targeted
    assert all(cfg.is_exact for cfg in bound.assignment(bound.baseline_params()).values())


def test_unknown_group_lists_the_valid_ones(mobilenet) -> None:
    with pytest.raises(SearchSpaceError, match=r"Unknown layer group.*'nope'.*classifier"):
        decimal_places_space("group", groups=["nope"]).bind(mobilenet, GROUPS)


def test_layer_the_model_lacks(mobilenet) -> None:
    with pytest.raises(SearchSpaceError, match=r"features\.99\.conv.*lacks"):
        decimal_places_space("layer", layers=["features.99.conv"]).bind(mobilenet, GROUPS)


def test_group_regex_matching_nothing(mobilenet) -> None:
    with pytest.raises(SearchSpaceError, match="matches no Conv2d/Linear"):
        decimal_places_space("group").bind(mobilenet, {**GROUPS, "ghost": r"decoder\.\d+"})


def test_decimal_choice_out_of_range() -> None:
    with pytest.raises(ConfigError, match="1 to 9"):
        decimal_places_space("uniform", decimals=[0, 4])


def test_bad_granularity() -> None:
    with pytest.raises(ConfigError, match="granularity"):
        decimal_places_space("per_block")  # type: ignore[arg-type]


def _sensitivity(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["knob", "unit", "value", "accuracy_drop_points"])


def test_pruning_drops_harmful_choices_only(mobilenet) -> None:
    bound = decimal_places_space("group", decimals=[1, 2, 3]).bind(mobilenet, GROUPS)
    table = _sensitivity(
        [
            ("decimals", "depthwise", "1", 40.0),
            ("decimals", "depthwise", "2", 1.5),
            ("decimals", "depthwise", "3", 0.2),
            ("decimals", "projection", "1", 0.9),
            ("decimals", "classifier", "1", 12.0),
            ("multiplier", "first_conv", "1", 99.0),  # another knob: ignored
        ]
    )
    pruned = prune_space(bound, table, max_drop_points=1.0)
    grid = pruned.grid()
    assert grid["decimals.depthwise"] == [3, "exact"]
    assert grid["decimals.projection"] == [1, 2, 3, "exact"]  # 0.9 <= 1.0; 2 and 3 unmeasured: kept
    assert grid["decimals.classifier"] == [2, 3, "exact"]
    assert grid["decimals.first_conv"] == [1, 2, 3, "exact"]
    assert pruned.params["decimals.depthwise"][1] == bound.params["decimals.depthwise"][1]  # same layers
    assert pruned.size == bound.size * 2 * 3 // (4 * 4)


def test_pruning_table_that_matches_nothing(mobilenet) -> None:
    bound = decimal_places_space("layer", decimals=[1, 2]).bind(mobilenet, GROUPS)
    with pytest.raises(ConfigError, match=r"sensitivity\.granularity"):
        prune_space(bound, _sensitivity([("decimals", "depthwise", "1", 40.0)]), 1.0)


def test_pruning_table_missing(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"python -m dse\.sensitivity"):
        load_sensitivity(tmp_path / "nope.csv")


def test_one_arithmetic_parameter_holds_formats_and_multipliers(mobilenet) -> None:
    space = instantiate(compose_config(["study=mobilenet_cifar10_arithmetic"]).space)
    bound = space.bind(mobilenet, GROUPS)
    assert sorted(bound.params) == sorted(f"arithmetic.{g}" for g in GROUPS)
    assert bound.knob_fields == ["activation_format", "multiplier", "weight_format"]
    params = {name: EXACT for name in bound.params}
    params |= {
        "arithmetic.depthwise": "int4/int8",
        "arithmetic.expansion": "mul8s_1L2N",
        "arithmetic.classifier": "int6",
    }
    assignment = bound.assignment(params)
    members = resolve_groups(mobilenet, GROUPS)
    depthwise, expansion = members["depthwise"][0], members["expansion"][0]
    assert assignment[depthwise] == LayerConfig(weight_format="int4", activation_format="int8")
    assert assignment[expansion] == LayerConfig(multiplier="mul8s_1L2N")
    assert assignment["classifier.1"] == LayerConfig(weight_format="int6", activation_format="int6")
    assert assignment["features.0.0"].is_exact
    # a uniform setting is "every group on one choice", whichever kind it is
    assert {"arithmetic.first_conv": "int6", "arithmetic.classifier": "int6"}.items() <= next(
        u for u in bound.uniform_params() if u["arithmetic.first_conv"] == "int6"
    ).items()


def test_an_arithmetic_choice_that_is_neither_is_refused_with_both_kinds_named() -> None:
    with pytest.raises(ConfigError, match=r"'int9x' is neither a multiplier .* nor number formats"):
        arithmetic_space(["int6", "int9x"])
