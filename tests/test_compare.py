"""python -m dse.compare: several studies' fronts on shared axes and a shared hypervolume reference."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from dse.compare import run_compare
from dse.search import run_search
from tests.conftest import FAST, compose_config, run_module

pytestmark = pytest.mark.slow
OBJECTIVES = "study.objectives=[{name: accuracy, direction: maximize}, {name: energy_uj, direction: minimize}]"


def _two_studies() -> None:
    base = ["study=quickstart", "study.measure_time=false", OBJECTIVES, *FAST]
    run_search(compose_config([*base, "study.n_trials=4"]))
    run_search(compose_config([*base, "study.n_trials=4", "study.name=quickstart_formats", "space=formats_group"]))


def test_two_studies_with_different_spaces_compare_on_shared_axes(workdir: Path) -> None:
    _two_studies()
    result = run_compare(compose_config(["studies=[quickstart,quickstart_formats]"], "compare"))
    summary = result.summary.set_index("study")
    assert list(summary.index) == ["quickstart", "quickstart_formats"]
    assert (summary["feasible_trials"] == 4).all() and (summary["front_size"] >= 1).all()
    assert ((summary["hypervolume"] > 0) & (summary["hypervolume"] < 1)).all()
    # one reference for both: 1.1 x the baseline energy (the same exact model in both studies)
    baseline = result.points[result.points["baseline"]]
    assert result.reference == (0.0, pytest.approx(1.1 * baseline["energy_uj"].max()))
    for name in summary.index:  # each front is non-dominated within its study
        pts = result.points[result.points["study"] == name]
        for _, p in pts[pts["on_front"]].iterrows():
            assert not ((pts["accuracy"] > p["accuracy"]) & (pts["energy_uj"] <= p["energy_uj"])).any()
    assert {f.name for f in (workdir / "compare").iterdir()} == {
        "compare_summary.csv",
        "compare_points.csv",
        "compare_fronts.png",
    }
    run = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db").get_run(result.run_id)  # type: ignore[arg-type]
    assert run.data.tags["dse_role"] == "compare"
    assert run.data.metrics["hypervolume_quickstart"] == pytest.approx(summary.loc["quickstart", "hypervolume"])


def test_a_study_that_does_not_exist_is_named_with_the_ones_that_do(workdir: Path) -> None:
    _two_studies()
    proc = run_module(workdir, "dse.compare", "studies=[quickstart,nope]")
    out = proc.stderr + proc.stdout
    assert proc.returncode == 2 and "Traceback" not in out
    assert "No study 'nope'" in out and "Studies there: quickstart, quickstart_formats." in out
