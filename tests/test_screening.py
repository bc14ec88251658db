"""Multi-fidelity screening: its statistics, its decisions, and a real search that never loses a true-front point."""

from __future__ import annotations

import contextlib
import math
import signal
import sqlite3
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dse.exceptions import ConfigError
from dse.objectives import Objective
from dse.search import run_search
from dse.study.screening import ScreeningRule, binomial_cdf, clopper_pearson_upper
from dse.study.storage import create_storage
from tests.conftest import compose_config

OBJECTIVES = [Objective("accuracy", "maximize"), Objective("energy_uj", "minimize")]


def _exact_cdf(c: int, n: int, p: Fraction) -> float:
    return float(sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(c + 1)))


@pytest.mark.parametrize(("c", "n", "p"), [(0, 10, "1/10"), (3, 20, "1/4"), (40, 50, "9/10"), (180, 200, "87/100")])
def test_binomial_tail_equals_the_exact_sum(c: int, n: int, p: str) -> None:
    assert binomial_cdf(c, n, float(Fraction(p))) == pytest.approx(_exact_cdf(c, n, Fraction(p)), rel=1e-9)


@pytest.mark.parametrize(("c", "n", "alpha"), [(0, 10, 0.05), (0, 500, 1e-3), (7, 20, 0.01), (450, 500, 1e-3)])
def test_the_upper_bound_is_where_the_exact_tail_equals_alpha(c: int, n: int, alpha: float) -> None:
    p_up = clopper_pearson_upper(c, n, alpha)
    if c == 0:
        assert p_up == pytest.approx(1 - alpha ** (1 / n), rel=1e-9)  # closed form
    exact = _exact_cdf(c, n, Fraction(p_up))
    assert exact == pytest.approx(alpha, rel=1e-6)
    assert _exact_cdf(c, n, Fraction(p_up - 1e-4)) > alpha > _exact_cdf(c, n, Fraction(min(p_up + 1e-4, 1)))
    assert p_up > c / n


def test_decisions_prune_only_what_the_optimistic_bound_leaves_dominated() -> None:
    rule = ScreeningRule(OBJECTIVES, first_images=200, alpha=1e-3)
    front = [[0.80, 10.0], [0.70, 5.0]]
    # 100/200 right: even optimistic, far below 0.70, at more energy than the 5 uJ trial
    assert rule.decide(100, 200, 1000, {"energy_uj": 6.0}, front).prune
    # the same first images but cheaper than every front trial: it may extend the front
    assert not rule.decide(100, 200, 1000, {"energy_uj": 4.0}, front).prune
    # 150/200 right: the bound reaches past 0.70, so at 6 uJ it is not (yet) dominated
    decision = rule.decide(150, 200, 1000, {"energy_uj": 6.0}, front)
    assert not decision.prune and decision.upper_bound > 0.80 > decision.partial_accuracy
    # infeasible whatever its energy
    limited = ScreeningRule(OBJECTIVES, first_images=200, alpha=1e-3, min_accuracy=0.8)
    assert limited.decide(100, 200, 1000, {"energy_uj": 1.0}, []).prune


def test_screening_refuses_objectives_it_cannot_bound() -> None:
    with pytest.raises(ConfigError, match="inference_time_s"):
        ScreeningRule([*OBJECTIVES, Objective("inference_time_s", "minimize")])


# A space of the tiny CNN small enough to enumerate: 3^3 = 27 assignments (with exact)
SPACE = ["space.groups=[pointwise,depthwise,first_conv]", "space.decimals=[1,2]", "data.test_subset=1000"]
SEARCH = [
    "study=quickstart",
    "study.measure_time=false",
    "study.objectives=[{name: accuracy, direction: maximize}, {name: energy_uj, direction: minimize}]",
    "tracking=none",
    "sampler=grid",
    *SPACE,
]


@pytest.mark.slow
def test_screening_never_prunes_a_point_of_the_true_front_and_resumes(workdir: Path) -> None:
    truth = run_search(compose_config([*SEARCH, "study.name=truth", "study.n_trials=27"])).study
    true_front = {t.user_attrs["assignment_key"] for t in truth.best_trials}
    screened = [*SEARCH, "study.name=screened", "screening.enabled=true", "screening.first_images=200"]
    run_search(compose_config([*screened, "study.n_trials=8"]))
    study = run_search(compose_config([*screened, "study.n_trials=27"])).study  # resumed
    pruned = [t for t in study.trials if "screening_reason" in t.user_attrs]
    assert all(t.state == TrialState.PRUNED for t in pruned)
    assert not {t.user_attrs["assignment_key"] for t in pruned} & true_front
    assert {t.user_attrs["assignment_key"] for t in study.best_trials} == true_front
    evaluated = [t.user_attrs["assignment_key"] for t in study.trials if t.state == TrialState.COMPLETE] + [
        t.user_attrs["assignment_key"] for t in pruned
    ]
    assert len(evaluated) == len(set(evaluated))  # no assignment evaluated twice, across the resume
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) + len(pruned) == 27 and pruned  # the grid, some of it stopped early
    for t in pruned:
        assert (
            t.user_attrs["screening_images"] == 200
            and t.user_attrs["screening_upper_bound"] >= t.user_attrs["screening_partial_accuracy"]
        )


@pytest.mark.slow
def test_a_killed_screened_study_resumes_without_evaluating_anything_twice(workdir: Path) -> None:
    """SIGKILL mid-trial of a study with screening on; the re-run finishes the budget, the screened-out
    trials stay PRUNED, and no assignment is evaluated (in full or screened) twice."""
    cmd = [
        sys.executable,
        "-m",
        "dse.search",
        *SEARCH[:4],  # quickstart, objectives without a measured time, no tracking
        "study.n_trials=10",
        "sampler=tpe",
        "data.test_subset=1000",
        "screening.enabled=true",
        "screening.first_images=200",
        "storage.heartbeat_interval=1",
        "storage.grace_period=2",
    ]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = workdir / "mlruns" / "optuna.db"
    deadline, done, running = time.time() + 240, 0, 0
    while time.time() < deadline and not (done >= 3 and running == 1):
        time.sleep(0.2)
        if db.exists():
            with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(db, timeout=5) as con:
                counts = dict(con.execute("select state, count(*) from trials group by state").fetchall())
                done, running = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0), counts.get("RUNNING", 0)
    assert done >= 3 and running == 1, "the first run never got into its fourth trial"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    storage = create_storage(f"sqlite:///{db}")
    before = {t.number: t.state for t in optuna.load_study(study_name="quickstart", storage=storage).trials}
    time.sleep(3)  # past the grace period
    rerun = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = optuna.load_study(study_name="quickstart", storage=storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 10
    assert not study.get_trials(states=(TrialState.RUNNING,))
    for number, state in before.items():  # what finished before the kill stays as it was
        if state in (TrialState.COMPLETE, TrialState.PRUNED):
            assert study.trials[number].state == state
    evaluated = [
        t.user_attrs["assignment_key"]
        for t in study.trials
        if t.state == TrialState.COMPLETE or "screening_reason" in t.user_attrs
    ]
    assert len(evaluated) == len(set(evaluated))


def test_screening_skips_every_image_of_an_assignment_outside_a_cost_bound(workdir: Path) -> None:
    """A cost bound (``study.constraints``) is known before any image: with screening on, an assignment
    outside it is pruned with no image evaluated, one inside it is evaluated in full, and the front is the
    front of the feasible trials."""
    from dse.config_building import build_trained_model, candidate_evaluator

    cfg = compose_config(SEARCH)
    model = build_trained_model(cfg.model)
    candidates = candidate_evaluator(cfg, model)
    bound = 0.6 * candidates.costs(candidates.cost_table(model, {}))["energy_uj"]  # splits this grid 18 / 9
    study = run_search(
        compose_config(
            [
                *SEARCH,
                "study.n_trials=27",
                "screening.enabled=true",
                "screening.first_images=200",
                f"study.constraints=[{{metric: energy_uj, max: {bound}}}]",
            ]
        )
    ).study
    by_cost = [t for t in study.trials if "above its bound" in str(t.user_attrs.get("screening_reason", ""))]
    assert by_cost and all(t.state == TrialState.PRUNED for t in by_cost)
    assert all(t.user_attrs["screening_images"] == 0 and t.user_attrs["energy_uj"] > bound for t in by_cost)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert all(t.user_attrs["energy_uj"] <= bound for t in complete if t.number != 0)  # trial 0: the exact model
    assert study.best_trials and all(t.user_attrs["energy_uj"] <= bound for t in study.best_trials)
