"""The uniform settings of a space (every layer at one choice) are evaluated first, by default, and every front
is shown beside them and the exact model, marked as such."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest

from dse.search import run_search
from tests.conftest import FAST, compose_config, needs_cifar10

pytestmark = [pytest.mark.slow, needs_cifar10]

DECIMALS = [1, 2, 3]  # three uniform assignments: every layer at 1, at 2, at 3


def _search(workdir: Path, objectives: str, extra: list[str]) -> optuna.Study:
    cfg = compose_config(
        [
            "study=quickstart",
            "study.measure_time=false",
            f"study.objectives={objectives}",
            f"space.decimals=[{','.join(map(str, DECIMALS))}]",
            f"study.n_trials={1 + len(DECIMALS) + 2}",  # the exact baseline, the uniform ones, two more
            *FAST,
            *extra,
        ]
    )
    return run_search(cfg).study


def test_a_dominating_uniform_assignment_is_on_the_front_within_the_uniform_count_plus_two(workdir: Path) -> None:
    # energy alone: every layer at 1 decimal place has the fewest weight bits, so it dominates every other point
    study = _search(workdir, "[{name: energy_uj, direction: minimize}]", [])
    first = study.trials[: 1 + len(DECIMALS)]
    assert [set(t.params.values()) for t in first] == [{"exact"}, {1}, {2}, {3}]  # seeded first, in order
    (best,) = study.best_trials
    assert set(best.params.values()) == {1}
    assert best.number <= len(DECIMALS) + 2


def test_the_front_is_shown_beside_the_exact_model_and_the_uniform_settings(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    objectives = "[{name: accuracy, direction: maximize}, {name: energy_uj, direction: minimize}]"
    with caplog.at_level(logging.INFO, logger="dse.search"):
        study = _search(workdir, objectives, [])
    message = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Done:"))
    table = [line.split() for line in message.splitlines() if line.strip()[:1].isdigit()]
    by_trial = {int(row[0]): row for row in table}
    front = {t.number for t in study.best_trials}
    assert front <= set(by_trial)
    assert by_trial[0][1:3] in (["yes", "exact"], ["no", "exact"])  # the exact model is always shown
    uniform = [n for n, row in by_trial.items() if "uniform" in row]
    assert sorted(uniform) == [1, 2, 3]  # and every uniform setting, on the front or not
    assert all(row[1] == ("yes" if n in front else "no") for n, row in by_trial.items())


def test_seeding_can_be_turned_off(workdir: Path) -> None:
    study = _search(workdir, "[{name: energy_uj, direction: minimize}]", ["study.seed_uniform=false"])
    assert set(study.trials[0].params.values()) == {"exact"}
    assert study.user_attrs["n_trials"] == 1 + len(DECIMALS) + 2
    # no queue of uniform points: the sampler proposed the rest (TPE's random start)
    assert all("fixed_params" not in t.system_attrs for t in study.trials[1:])
