"""The trial loop's guards, on a real in-memory Optuna study and the tiny CNN."""

from pathlib import Path

import optuna
import pytest
import torch
from hydra.utils import instantiate

from dse.candidates.evaluation import Evaluator
from dse.candidates.evaluator import CandidateEvaluator
from dse.objectives import Objective
from dse.search_spaces import decimal_places_space
from dse.study.runner import StudyRunner, StudySettings
from dse.training.cifar10 import CIFAR10DataModule
from dse.training.models import get_model
from dse.training.weights import load_weights
from tests.conftest import compose_config

GROUPS = {
    "first_conv": r"features\.0\.0",
    "depthwise": r"features\.(1|3|5)\.0",
    "pointwise": r"features\.(2|4|6)\.0",
    "classifier": "classifier",
}


@pytest.fixture(scope="module")
def candidates() -> CandidateEvaluator:
    model = load_weights(get_model("tiny_cnn"), "tiny_cnn_cifar10")
    evaluator = Evaluator(
        CIFAR10DataModule(path="cifar10_test_subset", test_subset=100), timing_repeats=1, calibration_images=40
    )
    return CandidateEvaluator(model, evaluator, instantiate(compose_config([]).hardware.energy))


class Broken(CandidateEvaluator):
    """A setup that fails on every trial, as a broken GPU or an out-of-memory would."""

    def evaluate(self, assignment, timing=True, partial=None, deployed=False):  # type: ignore[no-untyped-def]
        raise RuntimeError("CUDA error: device-side assert triggered")


def test_a_setup_that_always_fails_stops_the_study(candidates: CandidateEvaluator) -> None:
    broken = Broken(candidates.model, candidates.evaluator, candidates.energy_model)
    space = decimal_places_space("group").bind(broken.model, GROUPS)
    study = optuna.create_study(directions=["maximize"])
    runner = StudyRunner(
        study, space, broken, StudySettings(n_trials=20, objectives=[Objective("accuracy", "maximize")])
    )
    runner.run()
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL] * 5
    assert runner.stopped_by_failures is not None and runner.stopped_by_failures.startswith("5 trials failed in a row")
    assert runner.stopped_by_failures.endswith(
        "The first: trial 0: RuntimeError: CUDA error: device-side assert triggered"
    )


def test_a_search_stopped_by_failures_exits_non_zero_with_one_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The command, not just the runner: exit status 2 and one clear line naming the first error, no traceback
    on the terminal (it goes to the log file), and what finished before is kept."""
    import logging
    import sys

    from dse.cli import run_command
    from dse.search import run_search

    overrides = ["study=quickstart", "tracking=none", "data.test_subset=200", "evaluation.timing_repeats=1"]
    run_search(compose_config([*overrides, "study.n_trials=2"]))
    monkeypatch.setattr(CandidateEvaluator, "evaluate", Broken.evaluate)
    console = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(console)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as stop:
            run_command(run_search, compose_config([*overrides, "study.n_trials=9"]))
        printed = console.format(next(r for r in caplog.records if r.exc_info))
    finally:
        logging.getLogger().removeHandler(console)
    assert stop.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "dse"]
    assert len(errors) == 1 and "5 trials failed in a row" in errors[0]
    assert "The first: trial 2: RuntimeError: CUDA error: device-side assert triggered" in errors[0]
    # Optuna's report of a failed trial: one line on the terminal, its traceback kept for the log file
    assert "Traceback" not in printed and "traceback in the log file" in printed and "\n" not in printed
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{workdir}/mlruns/optuna.db")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2  # kept


def test_constraint_marks_large_accuracy_drops_infeasible(candidates: CandidateEvaluator) -> None:
    space = decimal_places_space("uniform", decimals=[1, 3]).bind(candidates.model, GROUPS)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    settings = StudySettings(
        n_trials=3,
        objectives=[Objective("accuracy", "maximize"), Objective("energy_uj", "minimize")],
        max_accuracy_drop=0.02,
        measure_time=False,
    )
    StudyRunner(study, space, candidates, settings).run()
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 3
    front = {t.number for t in study.best_trials}
    drops = {t.number: t.user_attrs["accuracy_drop"] for t in trials}
    for t in trials:  # trial 0 is the exact baseline
        assert drops[t.number] == pytest.approx(trials[0].values[0] - t.values[0])
    infeasible = {n for n, d in drops.items() if d > 0.02}
    assert infeasible, "d=1 everywhere should lose more than 2 points"
    assert not infeasible & front
    assert front and front <= set(drops) - infeasible


def test_calibration_images_are_a_seeded_random_pick(candidates: CandidateEvaluator) -> None:
    batches = candidates.evaluator.calibration_batches()
    chosen = torch.cat(batches)
    everything = torch.cat(candidates.evaluator._batches())
    assert len(chosen) == 40
    assert not torch.equal(chosen, everything[:40])  # not the first (class-major) images
    assert torch.equal(chosen, torch.cat(candidates.evaluator.calibration_batches()))  # and the same every time
