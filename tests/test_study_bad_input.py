"""A study that cannot mean what it says stops before anything runs, says why and how to fix it, and
creates nothing: unknown metrics in objectives or constraints, a hardware preset without the part an
objective needs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from dse.objectives import MetricBound, parse_bounds
from tests.conftest import FAST, run_module

pytestmark = pytest.mark.usefixtures("workdir")


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["study.constraints=[{metric: energy_joules, max: 5}]"], "unknown metric 'energy_joules'"),
        (["study.constraints=[{metric: energy_uj}]"], "needs a max or a min"),
        (["study.constraints=[{metric: energy_uj, below: 3}]"], "take metric, max and min"),
        (
            ["study.objectives=[{name: accuracy, direction: maximize},{name: joules, direction: minimize}]"],
            "Unknown objective 'joules'",
        ),
        (
            [
                "~hardware.latency",
                "study.objectives=[{name: accuracy, direction: maximize},"
                "{name: modeled_latency_us, direction: minimize}]",
            ],
            "needs hardware.latency",
        ),
        (["~hardware.latency", "study.constraints=[{metric: modeled_latency_us, max: 10}]"], "needs hardware.latency"),
        (["study.measure_time=false", "study.constraints=[{metric: inference_time_s, max: 10}]"], "measured time"),
    ],
)
def test_bad_study_input_is_refused_before_anything_is_created(workdir: Path, overrides: list[str], says: str) -> None:
    proc = run_module(workdir, "dse.search", "study=quickstart", *FAST, *overrides, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out[-2000:]
    assert says in out
    assert not (workdir / "mlruns").exists()  # neither the study's database nor a run


def test_bounds_turn_into_optuna_constraint_values() -> None:
    (bound,) = parse_bounds([{"metric": "energy_uj", "max": 250, "min": 100}])
    assert bound.violations(300.0) == {"energy_uj_max": 50.0, "energy_uj_min": -200.0}
    assert all(v <= 0 for v in bound.violations(200.0).values())
    assert MetricBound("accuracy", min=0.8).violations(0.75) == {"accuracy_min": pytest.approx(0.05)}


def test_a_metric_bound_makes_trials_infeasible_and_keeps_them_off_the_front(workdir: Path) -> None:
    """The tiny CNN's quickstart space with an energy cap: every trial above it is infeasible, none is on the front."""
    cap = 20.0
    proc = run_module(
        workdir,
        "dse.search",
        "study=quickstart",
        *FAST,
        "study.n_trials=6",
        "tracking=none",
        f"study.constraints=[{{metric: energy_uj, max: {cap}}}]",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{workdir}/mlruns/optuna.db")
    energies = {t.number: t.user_attrs["energy_uj"] for t in study.trials if t.state.is_finished() and t.values}
    above = {n for n, e in energies.items() if e > cap}
    assert above and len(above) < len(energies)  # the cap splits the trials
    assert {t.number for t in study.best_trials}.isdisjoint(above)
    for t in study.trials:
        if t.number in energies:
            assert t.constraints["energy_uj_max"] == pytest.approx(energies[t.number] - cap)
