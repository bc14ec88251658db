"""The front re-evaluated on other images is the configuration that was searched: activation ranges are the
search's, whichever knob quantizes activations (a multiplier or an activation format), never re-calibrated
on the images that report it."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from dse.assignment import LayerConfig, needs_activation_ranges
from dse.candidates.accuracy_statistics import accuracy_interval, paired_difference
from dse.candidates.transform import apply_assignment
from dse.config_building import build_trained_model, candidate_evaluator, evaluator_on
from dse.study.final_evaluation import final_evaluation
from dse.tracking.tracker import NullTracker
from tests.conftest import compose_config, needs_cifar10

pytestmark = needs_cifar10

INT4_ACTIVATIONS = {"activation_format": "int4"}  # a formats study's choice: no multiplier


@pytest.fixture(scope="module")
def evaluators() -> tuple:
    """Candidates on the shipped subset (search) and on 200 held-out test images of the offline copy."""
    cfg = compose_config(["study=quickstart", "data.test_subset=300"])
    model = build_trained_model(cfg.model)
    search = candidate_evaluator(cfg, model)
    held = compose_config(["study=quickstart", "data=cifar10_npz", "data.test_subset=200", "data.test_split=held_out"])
    return search, evaluator_on(held, held.data), cfg


def test_held_out_candidates_keep_the_search_s_activation_ranges(evaluators: tuple) -> None:
    search, held, _ = evaluators
    own = candidate_evaluator(compose_config(["study=quickstart", "data.test_subset=300"]), search.model)
    own.evaluator = held  # what re-calibrating on the held-out images would give
    assert own.activation_ranges != search.activation_ranges  # other images, other ranges: the bug would show
    assert search.on(held).activation_ranges == search.activation_ranges


def test_a_formats_assignment_is_reported_with_the_ranges_it_was_searched_with(
    evaluators: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    search, held, cfg = evaluators
    search.activation_ranges  # noqa: B018  (calibrated on the search set, as the search did)

    def no_calibration_here() -> None:
        raise AssertionError("activation ranges re-calibrated on the held-out images")

    bound = instantiate(compose_config(["space=formats_group"]).space).bind(search.model, dict(cfg.model.layer_groups))
    # every layer group's activations in int8, weights exact: a formats study's point with no multiplier
    params = {p: ("int8" if p.startswith("activation_format.") else "exact") for p in bound.params}
    assignment = bound.assignment(params)
    assert all(c.activation_format == "int8" and not c.multiplier for c in assignment.values())
    study = optuna.create_study(directions=["maximize"])
    study.enqueue_trial(params)
    study.optimize(lambda t: float(bool(bound.suggest(t))), n_trials=1)
    with monkeypatch.context() as patch:
        patch.setattr(held, "calibration_batches", no_calibration_here)
        table = final_evaluation(study, bound, search, lambda: held, NullTracker())
    assert table is not None and list(table["trial"]) == [0]
    # the searched model (the search's ranges) on the held-out images, and the one the bug reported
    searched = held.accuracy(apply_assignment(search.model, assignment, search.activation_ranges))
    own = candidate_evaluator(compose_config(["study=quickstart", "data.test_subset=300"]), search.model)
    own.evaluator = held
    assert table.loc[0, "final_accuracy"] == searched.acc_top1
    assert table.loc[0, "final_n_images"] == held.n_images == 200
    assert own.activation_ranges != search.activation_ranges
    # with its 95% interval, and its difference from the exact model on the same 200 images
    row = table.loc[0]
    assert row["final_accuracy_low"] < row["final_accuracy"] < row["final_accuracy_high"]
    assert 0.05 < row["final_accuracy_high"] - row["final_accuracy_low"] < 0.2  # +-5-7 points on 200 images
    exact = held.accuracy(search.model).acc_top1
    assert row["final_vs_exact_points"] == pytest.approx(100 * (searched.acc_top1 - exact))
    assert 0.0 <= row["final_vs_exact_mcnemar_p"] <= 1.0


def test_accuracy_intervals_and_paired_tests_by_hand() -> None:
    # 87 of 100 right: Wilson's 95% interval, (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), is
    # (0.79020, 0.92243); the same images, 10 only-a vs 0 only-b: McNemar's exact p = 2 * 0.5**10
    interval = accuracy_interval(torch.tensor([True] * 87 + [False] * 13))
    assert (interval.low, interval.high) == (pytest.approx(0.790196, abs=1e-6), pytest.approx(0.922428, abs=1e-6))
    a = torch.tensor([True] * 90 + [False] * 10)
    b = torch.tensor([True] * 80 + [False] * 20)
    paired = paired_difference(a, b)
    assert (paired.only_a, paired.only_b) == (10, 0) and paired.p_value == pytest.approx(2 * 0.5**10)
    assert paired_difference(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="same images"):
        paired_difference(a, b[:50])


def test_layer_configs_with_an_activation_format_need_ranges() -> None:
    assert needs_activation_ranges({"a": LayerConfig(**INT4_ACTIVATIONS)})  # type: ignore[arg-type]
    assert not needs_activation_ranges({"a": LayerConfig(decimals=2)})


def test_the_closing_table_reads_one_format_a_column_with_the_exact_model_first() -> None:
    from dse.study.final_evaluation import _readable

    exact = {"final_accuracy": 0.87, "final_accuracy_low": 0.8604, "final_accuracy_high": 0.879}
    exact["final_n_images"] = 5000
    table = pd.DataFrame(
        [
            {
                "trial": 23,
                **{"search_accuracy": 0.864, "search_accuracy_low": 0.848, "search_accuracy_high": 0.878},
                **{"search_n_images": 2000, "final_accuracy": 0.8662, "final_accuracy_low": 0.856},
                **{"final_accuracy_high": 0.875, "final_n_images": 5000, "final_vs_exact_points": -0.38},
                "final_vs_exact_mcnemar_p": 0.1104,
            }
        ]
    )
    shown = _readable(table, exact)
    assert shown["trial"].tolist() == ["exact", "23"]
    assert shown.loc[0, "held-out top-1 %"] == "87.00 [86.0, 87.9] of 5000"
    assert shown.loc[1, "search top-1 %"] == "86.40 [84.8, 87.8] of 2000"
    assert shown.loc[1, "held-out top-1 %"] == "86.62 [85.6, 87.5] of 5000"
    assert shown.loc[1, "vs exact (points)"] == "-0.38" and shown.loc[1, "McNemar p"] == "0.11"
