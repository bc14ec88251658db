"""``python -m dse.export`` for real: a study searched with the deployed latency as objective, one of its
trials exported as a bundle, its manifest checked against the schema, ONNX Runtime's accuracy beside dse's on
held-out CIFAR-10 images, the bundle in the trial's MLflow run; bad requests refused with nothing left."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import mlflow
import numpy as np
import onnx
import pytest

from dse.assignment import targetable_layers
from dse.config_building import build_trained_model
from dse.deployment.runtime import onnx_session
from dse.exceptions import ConfigError
from dse.search import run_search
from tests.conftest import CIFAR10_NPZ, compose_config, needs_cifar10, run_module

pytestmark = [pytest.mark.slow, needs_cifar10]

STUDY = [
    "study=mobilenet_cifar10_deployed",
    "model=tiny_cnn_cifar10",
    "study.name=tiny_deployed",
    "study.n_trials=4",
    "data.test_subset=200",
    "data@final_eval.data=cifar10_npz",
    f"final_eval.data.path={CIFAR10_NPZ}",
    "final_eval.data.test_subset=300",
    "deployment.repeats=3",
]


def test_a_deployed_study_trial_exports_as_a_checked_bundle_in_its_run(workdir: Path) -> None:
    study = run_search(compose_config(STUDY)).study
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 4
    for t in trials:  # the objective was measured on ONNX Runtime, against the float32 export
        assert t.user_attrs["deployed_latency_ms"] > 0 and t.values[1] == t.user_attrs["deployed_latency_ms"]
        assert t.user_attrs["deployed_speedup_vs_fp32"] > 0 and t.user_attrs["deployed_batch_latency_ms"] > 0
    trial = trials[1]  # the first uniform setting (every layer group at the space's first choice)
    proc = run_module(workdir, "dse.export", *STUDY, f"trial={trial.number}", "export.check_images=300")
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundle = workdir / "deployments" / f"tiny_deployed-trial-{trial.number}"
    assert sorted(p.name for p in bundle.iterdir()) == [
        "assignment.yaml",
        "layers.csv",
        "manifest.json",
        "manifest.schema.json",
        "model.onnx",
    ]
    manifest = json.loads((bundle / "manifest.json").read_text())
    jsonschema.validate(manifest, json.loads((bundle / "manifest.schema.json").read_text()))
    assert manifest["source"]["study"] == "tiny_deployed" and manifest["source"]["trial"] == trial.number
    search = manifest["accuracy"]["search"]
    assert search["top1"] == trial.user_attrs["accuracy"] and search["n_images"] == 200
    assert "split search" in search["images"] and "200 images" in search["images"]
    check = manifest["accuracy"]["export_check"]
    assert check["n_images"] == 300 and "split held_out" in check["images"]
    assert abs(check["onnx_runtime_top1"] - check["dse_top1"]) <= 0.01 and check["images_differing"] <= 3
    layers = {layer["name"]: layer for layer in manifest["layers"]}
    assert list(layers) == list(targetable_layers(build_trained_model(compose_config(STUDY).model)))
    assert all(layer["runtime"] == "onnx" for layer in layers.values())  # formats only: every layer deploys
    assert sum(layer["cost"]["energy_pj"] for layer in layers.values()) / 1e6 == pytest.approx(
        manifest["cost"]["energy_uj"]
    )
    assert manifest["latency"]["candidate_ms"]["1"] > 0 and manifest["latency"]["float32_ms"]["64"] > 0
    # the ONNX model runs on ONNX Runtime as the manifest says: its input, any batch, ten logits
    model = onnx.load(str(bundle / "model.onnx"))
    out = onnx_session(model).run(None, {manifest["onnx"]["input"]: np.zeros((3, 3, 32, 32), np.float32)})[0]
    assert out.shape == (3, 10)
    # logged as artifacts of the trial's own run
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    logged = {a.path for a in client.list_artifacts(trial.user_attrs["mlflow_run_id"], "deployment")}
    assert {"deployment/manifest.json", "deployment/model.onnx", "deployment/assignment.yaml"} <= logged
    # the assignment file of the bundle exports the same configuration again
    again = run_module(
        workdir,
        "dse.export",
        *STUDY,
        f"assignment={bundle / 'assignment.yaml'}",
        "export.out_dir=again",
        "export.check_images=300",
        "export.measure_latency=false",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((workdir / "again" / "manifest.json").read_text())
    assert second["accuracy"]["export_check"] == check and second["latency"] is None


def test_a_deployed_latency_objective_over_a_space_that_does_not_deploy_is_refused_before_any_trial(
    workdir: Path,
) -> None:
    cfg = compose_config(
        [
            "study=quickstart",
            "study.objectives=[{name:accuracy,direction:maximize},{name:deployed_latency_ms,direction:minimize}]",
            "tracking=none",
        ]
    )
    with pytest.raises(ConfigError, match="which no runtime runs as dse emulates it") as err:
        run_search(cfg)
    assert "decimal places" in str(err.value) and "space=formats_group" in str(err.value)
    assert not (workdir / "mlruns" / "optuna.db").exists()  # refused before the study's storage is opened


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trial=99"], "has no COMPLETE trial 99; its complete trials: [0, 1]"),
        (["assignment=unknown.yaml"], "names layers the model lacks: ['features.99.0']"),
        (["assignment=e3m2.yaml"], "ONNX cannot express 1 layer(s): features.0.0's weight format is e3m2"),
        (["trial=1", "export.out_dir=unknown.yaml/bundle"], "Cannot write the bundle in"),
        (["trial=1", "export.out_dir=taken"], "taken already exists"),
    ],
)
def test_bad_requests_fail_clearly_and_leave_nothing(workdir: Path, args: list[str], message: str) -> None:
    base = ["study=quickstart", "study.n_trials=2", "tracking=none", "data.test_subset=200"]
    run_search(compose_config(base))
    (workdir / "unknown.yaml").write_text("features.99.0: {decimals: 2}\n")
    (workdir / "e3m2.yaml").write_text("features.0.0: {weight_format: e3m2}\n")
    (workdir / "taken").mkdir()
    before = sorted(p.name for p in workdir.iterdir())
    proc = run_module(workdir, "dse.export", *base, *args, "final_eval.enabled=false")
    log = proc.stderr + proc.stdout
    assert proc.returncode == 2 and "Traceback" not in log, log[-3000:]
    assert message in log
    after = sorted(p.name for p in workdir.iterdir() if p.name != "outputs")
    assert after == [p for p in before if p != "outputs"]  # no bundle, no partial directory
    assert list((workdir / "taken").iterdir()) == []
