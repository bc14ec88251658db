"""The retraining command, for real: tiny CNN, shipped subset, a few hundred CIFAR-10 training images."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from dse.config_building import build_trained_model
from dse.retrain import run_retrain
from dse.search import run_search
from dse.training.assets import resolve_asset
from tests.conftest import CIFAR10_NPZ, FAST, compose_config, needs_cifar10, run_module

pytestmark = [pytest.mark.slow, needs_cifar10]
LAYERS = [
    "features.0.0",
    "features.1.0",
    "features.2.0",
    "features.3.0",
    "features.4.0",
    "features.5.0",
    "features.6.0",
    "classifier",
]
TRAIN = [
    "data@retrain.data=cifar10_npz",
    f"retrain.data.path={CIFAR10_NPZ}",
    "retrain.data.train_subset=2000",
    "retrain.epochs=2",
    "data.test_subset=500",
]


def _assignment(tmp: Path, multiplier: str) -> Path:
    path = tmp / f"{multiplier}.yaml"
    path.write_text("".join(f"{layer}: {{multiplier: {multiplier}}}\n" for layer in LAYERS))
    return path


@pytest.mark.parametrize("forward", ["bit_exact", "error_model"])
def test_retraining_wins_back_accuracy_lost_to_a_coarse_multiplier(workdir: Path, forward: str) -> None:
    """Mitch-w2 on every layer of the tiny CNN loses far more than 5 points on 500 held-out test
    images; two short epochs of retraining with it in the forward pass win most of it back, whether
    training runs the bit-exact forward or the fitted error model (evaluation is bit-exact in both)."""
    exact = run_search(
        compose_config(
            [
                "study=quickstart",
                "study.n_trials=1",
                "tracking=none",
                "data.test_subset=500",
                "evaluation.timing_repeats=1",
            ]
        )
    )
    exact_accuracy = exact.study.trials[0].values[0]
    cfg = compose_config(
        [
            "study=quickstart",
            f"assignment={_assignment(workdir, 'mitchell_w2_s8')}",
            "retrain.lr=0.005",
            f"retrain.forward={forward}",
            "retrain.recalibrate=true",
            "tracking=none",
            *TRAIN,
        ],
        "retrain",
    )
    result = run_retrain(cfg)
    assert result.training_forward == forward
    assert result.accuracy_before < exact_accuracy - 0.05  # the approximation costs clearly
    assert result.accuracy_after > result.accuracy_before + 0.25  # measured: 0.238 -> 0.674 (bit-exact)
    assert result.accuracy_recalibrated is not None and 0.1 < result.accuracy_recalibrated <= 1
    assert result.weights.is_file()


def test_a_study_trial_is_retrained_logged_and_resumed(workdir: Path) -> None:
    search = [
        "study=mobilenet_cifar10_multipliers",
        "model=tiny_cnn_cifar10",
        "study.name=tiny_multipliers",
        "study.n_trials=2",
        "space.multipliers=[mul8s_1KV9,mitchell_w4_s8]",
        "evaluation.calibration_images=64",
        *FAST,
    ]
    result = run_search(compose_config(search))
    trial = result.study.trials[1]
    retrain = [*search, "trial=1", *TRAIN, "retrain.epochs=1", "data.test_subset=200"]
    first = run_retrain(compose_config(retrain, "retrain"))
    assert first.accuracy_before == pytest.approx(trial.values[0])  # the trial's own model, as the search scored it
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    run = client.get_run(first.run_id)  # type: ignore[arg-type]
    assert run.info.status == "FINISHED"
    assert run.data.tags["dse_role"] == "retrain" and run.data.tags["dse_study"] == "tiny_multipliers"
    assert run.data.tags["dse_trial"] == "1" and run.data.tags["dse_trial_run_id"] == trial.user_attrs["mlflow_run_id"]
    assert run.data.metrics["accuracy_after"] == pytest.approx(first.accuracy_after)
    assert "train_loss" in run.data.metrics  # the learning curve
    assert {a.path for a in client.list_artifacts(first.run_id)} >= {"retrained.pt", "assignment.json"}
    # which forward trained: the compiled kernel is fast, so auto keeps the bit-exact one on CPU
    assert run.data.tags["dse_training_forward"] == first.training_forward == "bit_exact"
    assert run.data.params["training_forward"] == "bit_exact" and run.data.params["retrain.forward"] == "auto"
    # the candidate trained is the deployed one: BatchNorm folded into the convs (no BatchNorm left), whose
    # weights and biases moved away from the folded baseline's
    retrained = torch.load(first.weights, weights_only=True)
    baseline = build_trained_model(compose_config(search).model).state_dict()
    assert not any("running_mean" in k for k in retrained)
    assert not torch.equal(retrained["features.2.0.weight"], baseline["features.2.0.weight"])
    assert not torch.equal(retrained["features.2.0.bias"], baseline["features.2.0.bias"])
    # re-running resumes from the last checkpoint: nothing is trained again, the same weights come out
    digest = hashlib.sha256(first.weights.read_bytes()).hexdigest()
    again = run_retrain(compose_config(retrain, "retrain"))
    assert again.accuracy_after == pytest.approx(first.accuracy_after)
    assert hashlib.sha256(again.weights.read_bytes()).hexdigest() == digest


def _cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_module(workdir, "dse.retrain", *args)


def test_a_diverging_retraining_stops_clearly_and_changes_nothing(workdir: Path) -> None:
    shipped = resolve_asset("tiny_cnn_cifar10")
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()
    run_search(compose_config(["study=quickstart", "study.n_trials=2", *FAST]))
    proc = _cli(workdir, "study=quickstart", "trial=1", *TRAIN, "retrain.lr=1e9", "retrain.epochs=1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "Retraining diverged" in proc.stderr + proc.stdout and "Lower retrain.lr" in proc.stderr + proc.stdout
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("dse").experiment_id], filter_string="tags.dse_role = 'retrain'"
    )
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == digest  # the baseline is never written
    assert (
        len(
            [
                t
                for t in run_search(compose_config(["study=quickstart", "study.n_trials=2", *FAST])).study.trials
                if t.state.name == "COMPLETE"
            ]
        )
        == 2
    )  # the study is intact


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["study=quickstart", "trial=99"], "has no COMPLETE trial 99; its complete trials: [0, 1]"),
        (["study=quickstart", "study.name=nothing_here", "trial=0"], "No study 'nothing_here'"),
        (["study=quickstart"], "Give exactly one of trial=<number>"),
        (["study=quickstart", "assignment=bad.yaml"], "names layers the model lacks: ['features.99.0']"),
        (["study=quickstart", "assignment=missing.yaml"], "does not exist"),
    ],
)
def test_bad_requests_fail_clearly(workdir: Path, args: list[str], message: str) -> None:
    run_search(compose_config(["study=quickstart", "study.n_trials=2", "tracking=none", *FAST]))
    (workdir / "bad.yaml").write_text("features.99.0: {decimals: 2}\n")
    proc = _cli(workdir, *args, "tracking=none")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert message in proc.stderr + proc.stdout


def test_a_killed_retraining_resumes_from_its_checkpoint(workdir: Path) -> None:
    """SIGKILL after the first epoch's checkpoint; the re-run resumes there (no epoch is trained twice),
    the dead run is marked KILLED and the new one says which run it resumes."""
    assignment = _assignment(workdir, "mul8s_1KV9")
    args = [
        "study=quickstart",
        f"assignment={assignment}",
        *TRAIN,
        "retrain.epochs=4",
        "retrain.data.train_subset=500",
        "retrain.data.val_size=100",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dse.retrain", *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = workdir / "checkpoints/retrain/assignment-mul8s_1KV9/last.ckpt"
    deadline = time.monotonic() + 300
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # let the checkpoint's write finish (Lightning writes it atomically)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.is_file(), "no checkpoint was written before the kill"
    epochs_done = torch.load(last, weights_only=False)["epoch"] + 1
    assert epochs_done < 4
    again = _cli(workdir, *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "(resuming " in again.stderr + again.stdout
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("dse").experiment_id], filter_string="tags.dse_role = 'retrain'"
    )
    by_status = {r.info.status: r for r in runs}
    assert len(runs) == 2 and set(by_status) == {"KILLED", "FINISHED"}
    assert by_status["FINISHED"].data.tags["dse_resumes_run"] == by_status["KILLED"].info.run_id
    # the resumed run logged only the epochs the dead one had not finished
    curve = client.get_metric_history(by_status["FINISHED"].info.run_id, "train_loss")
    assert sorted(m.step for m in curve) == list(range(epochs_done, 4))


def test_retraining_without_training_images_is_refused_before_any_work(workdir: Path) -> None:
    """Test-only images for retraining: refused at once with the override that sets *retraining's* data
    (not the search's), before the candidate is evaluated or an MLflow run is made."""
    run_search(compose_config(["study=quickstart", "study.n_trials=2", *FAST]))
    start = time.monotonic()
    proc = _cli(workdir, "study=quickstart", "trial=1", "data@retrain.data=cifar10_subset", *FAST)
    said = proc.stderr + proc.stdout
    assert proc.returncode == 2 and "Traceback" not in said, said[-2000:]
    assert "holds test images only" in said and "data@retrain.data=cifar10_npz retrain.data.path=" in said
    assert time.monotonic() - start < 60  # a start-up, not an evaluation of 1,000 images first
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("dse").experiment_id], filter_string="tags.dse_role = 'retrain'"
    )
    assert runs == []
