"""End to end: the quickstart study through Optuna, Lightning and MLflow, for real."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from dse.objectives import parse_objectives
from dse.search import run_search
from dse.study.storage import create_storage
from tests.conftest import FAST, compose_config, run_module

pytestmark = pytest.mark.slow
OBJECTIVES = ["accuracy", "energy_uj", "modeled_latency_us"]


def load(workdir: Path, name: str = "quickstart") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=create_storage(f"sqlite:///{workdir}/mlruns/optuna.db"))


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_quickstart_records_everything_and_resumes(workdir: Path) -> None:
    result = run_search(compose_config(["study=quickstart", "study.n_trials=4", *FAST]))
    study = load(workdir)
    trials = complete(study)
    assert len(trials) == 4
    baseline = trials[0]
    assert baseline.user_attrs["assignment_key"] == "exact"
    assert 0.55 < baseline.values[0] <= 1.0  # the shipped tiny CNN is a trained model, not chance
    # rounding to 1 decimal place cannot cost more energy than exact fp32 weights
    assert all(t.values[1] <= baseline.values[1] + 1e-9 for t in trials)

    # MLflow: one parent, one finished child per complete trial, metrics = objectives
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("dse")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("dse_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert len(parents) == 1 and parents[0].info.run_id == result.parent_run_id
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    by_id = {t.user_attrs["mlflow_run_id"]: t for t in trials}
    for run in children:
        trial = by_id[run.info.run_id]
        for name, value in zip(OBJECTIVES, trial.values, strict=False):
            assert run.data.metrics[name] == pytest.approx(value)
        assert {f"decimals.{g}" for g in ("first_conv", "depthwise", "pointwise", "classifier")} <= set(run.data.params)
        assert "layer.features.0.0.decimals" in run.data.params
        # only the knobs this space searches: 4 group params + the 8 layers' decimal places
        assert len(run.data.params) == 4 + 8, sorted(run.data.params)
        assert all(v != "None" for v in run.data.params.values())

    # the Pareto CSV on the parent is study.best_trials
    artifacts = Path(client.download_artifacts(result.parent_run_id, "pareto", str(workdir / "dl")))
    front = pd.read_csv(artifacts / "pareto_front.csv")
    assert sorted(front["trial"]) == sorted(t.number for t in study.best_trials)
    for _, row in front.iterrows():
        values = study.trials[int(row["trial"])].values
        assert [row[n] for n in OBJECTIVES] == pytest.approx(values)
    assert (artifacts / "pareto_front.png").stat().st_size > 10_000
    assert "plotly" in (artifacts / "pareto_front.html").read_text()[:200_000]
    assert "hypervolume" in client.get_run(result.parent_run_id).data.metrics

    # resume to a larger budget: only the difference is evaluated, same parent, no duplicate assignments
    before = {t.number: t.values for t in trials}
    again = run_search(compose_config(["study=quickstart", "study.n_trials=7", *FAST]))
    trials = complete(load(workdir))
    assert len(trials) == 7
    assert {t.number: t.values for t in trials if t.number in before} == before
    keys = [t.user_attrs["assignment_key"] for t in trials]
    assert len(set(keys)) == len(keys)
    assert again.parent_run_id == result.parent_run_id
    runs = client.search_runs([experiment.experiment_id])
    assert sum(r.data.tags.get("mlflow.parentRunId") == result.parent_run_id for r in runs) == 7

    # re-running at the same budget does nothing
    run_search(compose_config(["study=quickstart", "study.n_trials=7", *FAST]))
    assert len(load(workdir).trials) == len(again.study.trials)


def test_duplicates_are_not_evaluated_and_small_spaces_are_exhausted(workdir: Path) -> None:
    # 3 distinct assignments; random sampling will propose repeats
    overrides = [
        "study=quickstart",
        "space=decimal_places_uniform",
        "space.decimals=[1,2]",
        "sampler=random",
        "study.n_trials=3",
        "tracking=none",
        *FAST,
    ]
    run_search(compose_config(overrides))
    study = load(workdir)
    trials = complete(study)

    def decimals_used(key: str) -> str:  # "exact", or the one d every layer got
        return key if key == "exact" else "|".join(sorted({part.split("decimals:")[1] for part in key.split(";")}))

    assert sorted(decimals_used(t.user_attrs["assignment_key"]) for t in trials) == ["1", "2", "exact"]
    for t in study.get_trials(states=(TrialState.PRUNED,)):
        assert t.user_attrs["duplicate_of"] in {c.number for c in trials}
    # asking for more than the space holds is capped, not looped forever
    run_search(compose_config([*overrides[:-3], "study.n_trials=50", "tracking=none", *FAST]))
    assert len(complete(load(workdir))) == 3


def test_killed_run_resumes_without_losing_trials(workdir: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "dse.search",
        "study=quickstart",
        "study.n_trials=6",
        "tracking=none",
        "storage.heartbeat_interval=1",
        "storage.grace_period=2",
        *FAST,
    ]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = workdir / "mlruns" / "optuna.db"
    deadline = time.time() + 240
    done = running = 0
    while time.time() < deadline and not (done >= 2 and running == 1):
        time.sleep(0.2)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as con:
                    counts = dict(con.execute("select state, count(*) from trials group by state").fetchall())
                done, running = counts.get("COMPLETE", 0), counts.get("RUNNING", 0)
            except sqlite3.OperationalError:
                pass
    assert done >= 2 and running == 1, "the first run never got into its third trial"
    proc.send_signal(signal.SIGKILL)  # mid-trial
    proc.wait()
    killed = load(workdir)
    finished = {t.number: t.values for t in complete(killed)}
    (dead,) = killed.get_trials(states=(TrialState.RUNNING,))
    assert len(finished) < 6

    time.sleep(3)  # past the grace period: the dead trial's heartbeat is stale
    rerun = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = load(workdir)
    trials = complete(study)
    assert len(trials) == 6
    assert {t.number: t.values for t in trials if t.number in finished} == finished
    keys = [t.user_attrs["assignment_key"] for t in trials]
    assert len(set(keys)) == len(keys)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    # the killed trial was failed as stale, and its parameters were evaluated by a retry
    assert study.trials[dead.number].state == TrialState.FAIL
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert dead.params.items() <= retry.params.items()  # a trial killed mid-sampling is completed by its retry
    if "duplicate_of" in dead.user_attrs:  # killed while being found a duplicate: its retry is one too
        assert retry.state == TrialState.PRUNED and retry.user_attrs["duplicate_of"] == dead.user_attrs["duplicate_of"]
    else:  # the dead trial itself never blocks its retry
        assert retry.state == TrialState.COMPLETE, retry.user_attrs.get("duplicate_of")


def test_a_dead_running_trial_never_blocks_its_own_retry(workdir: Path) -> None:
    """The race of a retry that sees its dead original still RUNNING (e.g. a stale cache, or a
    storage without heartbeat): the retry must be evaluated, not pruned as a duplicate."""
    from hydra.utils import instantiate

    from dse.assignment import assignment_key
    from dse.candidates.evaluator import CandidateEvaluator
    from dse.config_building import build_trained_model
    from dse.study.runner import StudyRunner, StudySettings

    cfg = compose_config(["study=quickstart", "study.n_trials=2", "tracking=none", *FAST])
    study = run_search(cfg).study
    model = build_trained_model(cfg.model)
    space = instantiate(cfg.space).bind(model, dict(cfg.model.layer_groups))
    template = complete(study)[-1]
    params = {**template.params, "decimals.classifier": 2, "decimals.first_conv": 2}
    key = assignment_key(space.assignment(params))
    assert key not in {t.user_attrs["assignment_key"] for t in complete(study)}
    # a dead worker's trial, still RUNNING with its assignment key, and the retry queued for it
    dead = optuna.trial.create_trial(
        state=TrialState.RUNNING,
        params=params,
        distributions=template.distributions,
        user_attrs={"assignment_key": key},
    )
    study.add_trial(dead)
    dead_number = len(study.trials) - 1
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=params,
            distributions=template.distributions,
            user_attrs={"assignment_key": key},
            system_attrs={"failed_trial": dead_number, "retry_history": [dead_number]},
        )
    )
    candidates = CandidateEvaluator(
        model, instantiate(cfg.evaluation)(instantiate(cfg.data)), instantiate(cfg.hardware.energy)
    )
    settings = StudySettings(n_trials=3, objectives=parse_objectives([dict(o) for o in cfg.study.objectives]))
    StudyRunner(study, space, candidates, settings, running_is_live=True).run()
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead_number]
    assert retry.state == TrialState.COMPLETE and "duplicate_of" not in retry.user_attrs
    assert retry.user_attrs["assignment_key"] == key


def run_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_module(workdir, "dse.search", *args, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["study=nope"], "Available options in 'study'"),
        (["study=quickstart", "sampler=annealing"], "Available options in 'sampler'"),
        (["study=quickstart", "model=resnet9000"], "Available options in 'model'"),
        (["study=quickstart", "space.decimals=[0,3]"], "1 to 9"),
        (["study=quickstart", "space=decimal_places_layer", "space.layers=[features.9.0]"], "lacks"),
        (["study=quickstart", "model.weights=/no/such.pt"], "not found"),
        (["study=quickstart", "data.path=/no/such/cifar.npz"], "does not exist"),
        (["study=quickstart", "data.source=torchvision", "data.path=/tmp/no-cifar-here"], "download=true"),
        (["study=quickstart", "study.objectives=[{name: speed, direction: minimize}]"], "Unknown objective"),
        (["study=quickstart", "study.n_trials=-3"], "a whole number >= 1"),
        (["study=quickstart", "study.n_trials=0"], "a whole number >= 1"),
        (["study=quickstart", "study.max_accuracy_drop=5"], "a fraction of accuracy in [0, 1]"),
        (["study=quickstart", "space=multipliers_group", "space.multipliers=[mitchell_w6_s16]"], "2..12 bits"),
        (["study=quickstart", "evaluation.timing_repeats=0"], "timing_repeats must be >= 1"),
        # never coerced: 2.5 is not 2 decimal places, "12" is not [1, 2]
        (["study=quickstart", "space.decimals=[2.5,3.9]"], "space.decimals: 2.5 is not a number of decimal places"),
        (["study=quickstart", 'space.decimals="12"'], "space.decimals must be a non-empty list"),
        (["study=quickstart", "space.decimals=[abc]"], "space.decimals: 'abc' is not a number of decimal places"),
        (["study=quickstart", "space.decimals=3"], "space.decimals must be a non-empty list"),
        (["study=quickstart", "space=multipliers_group", "space.decimals=[0]"], "space.decimals: 0 is not a number"),
    ],
)
def test_bad_input_fails_clearly(workdir: Path, args: list[str], message: str) -> None:
    proc = run_cli(workdir, *args)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (workdir / "mlruns").exists()  # rejected before any study or MLflow run is created


def test_corrupt_checkpoint_and_stored_results_survive_bad_input(workdir: Path) -> None:
    run_search(compose_config(["study=quickstart", "study.n_trials=2", *FAST]))
    (workdir / "bad.pt").write_bytes(b"garbage")
    proc = run_cli(workdir, "study=quickstart", "model.weights=bad.pt")
    assert proc.returncode != 0 and "corrupt" in proc.stderr + proc.stdout
    # a changed search space against the existing study is refused, and the study is intact
    proc = run_cli(workdir, "study=quickstart", "space=decimal_places_uniform", *FAST)
    assert proc.returncode != 0 and "start a new study: study.name=quickstart-2" in proc.stderr + proc.stdout
    # so is a flipped direction (Optuna would keep the stored one and optimise the wrong way, silently)
    flipped = "study.objectives=[{name: accuracy, direction: maximize}, {name: energy_uj, direction: maximize}, " + (
        "{name: modeled_latency_us, direction: minimize}]"
    )
    proc = run_cli(workdir, "study=quickstart", flipped, *FAST)
    said = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "energy_uj minimize" in said and "energy_uj maximize" in said, said[-2000:]
    assert "study.name=quickstart-2" in said and "Traceback" not in said
    assert len(complete(load(workdir))) == 2
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("dse").experiment_id])
    assert sum(r.data.tags.get("dse_role") == "trial" for r in runs) == 2


def test_multiplier_study_end_to_end(workdir: Path) -> None:
    """Per-group multipliers on the tiny CNN: energy falls with the circuits' power, trials land in MLflow."""
    overrides = [
        "study=mobilenet_cifar10_multipliers",
        "model=tiny_cnn_cifar10",
        "study.name=tiny_multipliers",
        "study.n_trials=4",
        "space.multipliers=[exact_s8,mul8s_1KV9,mul8s_1L2N,mitchell_w6_s8]",
        "evaluation.calibration_images=64",
        *FAST,
    ]
    result = run_search(compose_config(overrides))
    trials = complete(load(workdir, "tiny_multipliers"))
    assert len(trials) == 4
    baseline, others = trials[0], trials[1:]
    assert baseline.user_attrs["assignment_key"] == "exact"
    for t in others:
        assert "multiplier:" in t.user_attrs["assignment_key"]
        assert t.values[1] < baseline.values[1]  # 8-bit integer layers cost less energy than fp32 ones
        assert 0.0 <= t.values[0] <= 1.0
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    children = client.search_runs(
        [client.get_experiment_by_name("dse").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    assert len(children) == 4
    assert any(r.data.params.get("layer.classifier.multiplier") not in (None, "None") for r in children)


def test_formats_and_multipliers_share_one_front(workdir: Path) -> None:
    """The arithmetic space on the tiny CNN: uniform int6 and uniform mul8s_1KV9 are both trials of one study,
    priced and scored alike, each layer's choice logged with the fields it sets."""
    overrides = [
        "study=mobilenet_cifar10_arithmetic",
        "model=tiny_cnn_cifar10",
        "study.name=tiny_arithmetic",
        "study.n_trials=4",
        "space.choices=[int6,int4/int8,mul8s_1KV9]",
        "evaluation.calibration_images=64",
        *FAST,
    ]
    result = run_search(compose_config(overrides))
    trials = {t.user_attrs["assignment_key"]: t for t in complete(load(workdir, "tiny_arithmetic"))}
    assert len(trials) == 4
    exact = trials.pop("exact")
    kinds = {("multiplier:mul8s_1KV9" in k, "weight_format:int6" in k, "weight_format:int4" in k) for k in trials}
    assert kinds == {(True, False, False), (False, True, False), (False, False, True)}
    for t in trials.values():
        assert t.values[1] < exact.values[1] and t.values[2] < exact.values[2]  # energy and modeled latency
        assert 0.3 < t.values[0] <= 1.0  # 6- and 8-bit arithmetic keeps a trained model well above chance
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    children = client.search_runs(
        [client.get_experiment_by_name("dse").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    logged = {
        (r.data.params["layer.classifier.multiplier"], r.data.params["layer.classifier.weight_format"])
        for r in children
    }
    assert {("mul8s_1KV9", "exact"), ("exact", "int6"), ("exact", "int4")} <= logged


def test_a_new_study_prints_no_optuna_experimental_warning(workdir: Path) -> None:
    """set_metric_names is experimental in Optuna: the warning it raises on every new study says nothing to a user."""
    proc = run_cli(workdir, "study=quickstart", "study.n_trials=1", "tracking=none", *FAST)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ExperimentalWarning" not in proc.stdout + proc.stderr
    assert load(workdir).metric_names == ["accuracy", "energy_uj", "modeled_latency_us"]
