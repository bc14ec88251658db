"""``python -m dse.report`` on a tiny configuration: every section from stored runs, and only from them.

Every stage runs for real on the tiny CNN (a few hundred CIFAR-10 images, studies of a few trials,
retraining on 200 images), except the search-efficiency benchmark, whose ground truth is 625
MobileNetV2 evaluations: its stored output (the committed ``docs/results_data/search_efficiency``)
is copied in, as a stage computed elsewhere would be. Then a stored value is changed and the document
rebuilt with ``report.recompute=false``: the document changes with it, and nothing is recomputed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import CIFAR10_NPZ, needs_cifar10, run_module

pytestmark = [pytest.mark.slow, needs_cifar10]

COMMITTED = Path(__file__).resolve().parents[1] / "docs/results_data"
STAGES = [
    "uniform_decimals",
    "decimals_by_group",
    "mitchell",
    "formats",
    "retraining",
    "emulation_speed",
    "headline_front",
]
TINY = [
    "model=tiny_cnn_cifar10",
    "data.test_subset=200",
    "data@final_eval.data=cifar10_npz",
    f"final_eval.data.path={CIFAR10_NPZ}",
    "final_eval.data.test_subset=300",
    "data@retrain.data=cifar10_npz",
    f"retrain.data.path={CIFAR10_NPZ}",
    "retrain.data.val_size=100",
    "evaluation.timing_repeats=1",
    "report.store=store",
    "report.output=doc/results.md",
    "report.figures=doc/figures",
    "report.work_dir=work",
    "report.uniform_decimals.decimals=[1,3]",
    "report.uniform_decimals.timing_repeats=3",
    "report.decimals_by_group.decimals=[1,3]",
    "report.decimals_by_group.combination_groups=[depthwise,pointwise]",
    "report.decimals_by_group.combination_decimals=[1]",
    "report.mitchell.multipliers=[mitchell_w4_s8,mitchell_w6_s8]",
    "report.formats.uniform=[fp32,e4m3,int8,int4]",
    "report.formats.study_overrides=['study.n_trials=4']",
    "report.headline_front.study_overrides=['study.n_trials=5']",
    "report.retraining.train_subset=200",
    "report.emulation_speed.args=[--tables,mitchell_w6_s8,--repeats,'1',--batch,'4',--lookup-batch,'1']",
]


def _section(doc: str, number: int) -> str:
    return doc.split(f"\n## {number}. ")[1].split("\n## ")[0]


def test_the_report_is_built_from_the_stored_runs_of_every_stage(workdir: Path) -> None:
    shutil.copytree(COMMITTED / "search_efficiency", workdir / "store/search_efficiency")
    done = run_module(workdir, "dse.report", *TINY, f"report.stages=[{','.join(STAGES)}]", timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    doc = (workdir / "doc/results.md").read_text()
    assert "Not computed" not in doc and "nan" not in doc
    for stage in STAGES:
        meta = json.loads((workdir / f"store/{stage}/meta.json").read_text())
        assert meta["complete"] and meta["compute_seconds"] > 0 and meta["mlflow_run_id"], stage
        assert meta["machine"]["torch"] and meta["machine"]["cores"] >= 1
        assert f"`{stage}`" in doc  # the appendix lists it, with its run
        assert meta["mlflow_run_id"] in doc
    for figure in (
        "paper1_uniform_decimals.png",
        "paper1_decimals_by_group.png",
        "retraining_front.png",
        "headline_front.png",
    ):
        assert (workdir / "doc/figures" / figure).stat().st_size > 10_000, figure
        assert f"](figures/{figure})" in doc

    # section 1: the numbers are the stored ones
    acc = pd.read_csv(workdir / "store/uniform_decimals/accuracy.csv").astype({"decimals": str})
    assert set(acc["decimals"]) == {"1", "3", "exact"} and (acc["test_images"] == 300).all()
    exact = acc.set_index("decimals").loc["exact", "top1"]
    assert 0.4 < exact < 1.0  # the tiny CNN is trained: far above chance
    assert f"{100 * exact:.2f}%" in _section(doc, 1)
    timing = pd.read_csv(workdir / "store/uniform_decimals/timing.csv")
    assert len(timing) == 3 * 3 and (timing["seconds"] > 0).all()
    # section 5: retraining improved what it retrained, on the stored numbers
    retrained = pd.read_csv(workdir / "store/retraining/retraining.csv").set_index("assignment")
    assert len(retrained) == 6 and retrained.loc["fp32", "before_top1"] == exact
    assert retrained["mlflow_run_id"].drop(index="fp32").str.fullmatch("[0-9a-f]{32}").all()
    # section 7: the lookup anchors were timed by the same run, and the document quotes them
    anchors = pd.read_csv(workdir / "store/emulation_speed/emulation_speed_lookup.csv").set_index("path")
    assert set(anchors.index) == {"table", "reference"} and (anchors["batch"] == 1).all()
    assert (anchors["lookup_ms"] > 0).all() and (anchors["exact_ms"] > 0).all()
    for path, r in anchors.iterrows():
        assert f"**{r['model_ratio']:.0f}x** ({r['model_ratio_min']:.0f}-" in _section(doc, 7), path
    # section 8: the study's trials, its front re-evaluated on the 300 "test" images
    trials = pd.read_csv(workdir / "store/headline_front/trials.csv")
    assert len(trials) == 5 and trials["on_front"].any()
    assert (trials.loc[trials["on_front"], "final_n_images"] == 300).all()

    # change one stored value: the rebuilt document shows it; nothing is recomputed
    before = doc
    acc.loc[acc["decimals"] == "exact", "top1"] = 0.123456
    acc.to_csv(workdir / "store/uniform_decimals/accuracy.csv", index=False)
    rebuilt = run_module(workdir, "dse.report", *TINY, "report.recompute=false", timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr[-4000:]
    assert "computing" not in rebuilt.stdout + rebuilt.stderr and "Wrote doc/results.md" in rebuilt.stdout
    doc = (workdir / "doc/results.md").read_text()
    assert "12.35%" in _section(doc, 1) and "12.35%" not in before
    strip = lambda text: re.sub(r"Generated .* by", "", text)  # noqa: E731
    assert strip(doc).replace("12.35%", f"{100 * exact:.2f}%") != strip(before)  # the drops moved with it
    assert _section(doc, 5) == _section(before, 5)  # the rest is unchanged


def test_an_unknown_stage_is_refused_with_the_list(workdir: Path) -> None:
    done = run_module(workdir, "dse.report", "report.stages=[paper9]", "report.store=store", timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode == 2
    assert "unknown stage(s) ['paper9']" in said and "uniform_decimals" in said
    assert "Traceback" not in said and not (workdir / "store").exists()
