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

from dse.candidates.accuracy_statistics import unpack_correct
from dse.report.readme_results import BEGIN, END
from dse.report.verdicts import CLAIMS
from tests.conftest import CIFAR10_NPZ, needs_cifar10, run_module

pytestmark = [pytest.mark.slow, needs_cifar10]

COMMITTED = Path(__file__).resolve().parents[1] / "docs/results_data"
STAGES = [
    "uniform_decimals",
    "decimals_by_group",
    "mitchell",
    "accumulation",
    "formats",
    "retraining",
    "recurrent",
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
    "report.uniform_decimals.decimals=[1,4]",  # d = 4: paper 1's claim
    "report.uniform_decimals.timing_repeats=3",
    "report.decimals_by_group.decimals=[1,3]",
    "report.decimals_by_group.combination_groups=[depthwise,pointwise]",
    "report.decimals_by_group.combination_decimals=[1]",
    "report.mitchell.multipliers=[mitchell_w4_s8,mitchell_w6_s8]",  # w6: paper 2; w4 (5.8%): the additions match
    "report.formats.uniform=[fp32,e4m3,int8,int4]",
    "report.formats.study_overrides=['study.n_trials=4']",
    "report.headline_front.study_overrides=['study.n_trials=5']",
    "report.accumulation.truncated_bits=[6]",  # 5.7% per product
    "report.retraining.train_subset=200",
    "report.retraining.seeds=[0,1]",
    "report.recurrent.multipliers=[mitchell_w2_s8,mul8s_1L2N]",
    "report.recurrent.worst=1",
    "report.recurrent.seeds=[0]",
    "report.readme=README.md",
    "report.allow_dirty=true",  # a developer's tree may be dirty; the refusal has its own test
    "report.emulation_speed.args=[--tables,mitchell_w6_s8,--repeats,'1',--batch,'4',--lookup-batch,'1']",
]


def _section(doc: str, number: int) -> str:
    return doc.split(f"\n## {number}. ")[1].split("\n## ")[0]


def _section_named(doc: str, title: str) -> str:
    return doc.split(f"\n## {title}")[1].split("\n## ")[0]


def test_the_report_is_built_from_the_stored_runs_of_every_stage(workdir: Path) -> None:
    shutil.copytree(COMMITTED / "search_efficiency", workdir / "store/search_efficiency")
    (workdir / "README.md").write_text(f"# a project\n\n{BEGIN}\n{END}\n\nmore\n")
    done = run_module(workdir, "dse.report", *TINY, f"report.stages=[{','.join(STAGES)}]", timeout=2400)
    assert done.returncode == 0, done.stderr[-4000:]
    doc = (workdir / "doc/results.md").read_text()
    assert "Not computed" not in doc and "nan" not in doc
    # the verdicts open the document; every claim has one, none left unmeasured
    assert doc.index("## Verdicts") < doc.index("## 1. ")
    verdicts = _section_named(doc, "Verdicts")
    assert verdicts.count("**not measured") == 0, verdicts
    outcomes = ("reproduced", "refuted", "not comparable", "not distinguishable", "mixed")
    assert sum(verdicts.count(f"**{v}**") for v in outcomes) == len(CLAIMS)
    readme = (workdir / "README.md").read_text()
    assert readme.startswith("# a project") and readme.endswith("more\n") and "| 1 | baseline accuracy |" in readme
    for stage in STAGES:
        meta = json.loads((workdir / f"store/{stage}/meta.json").read_text())
        assert meta["complete"] and meta["compute_seconds"] > 0 and "mlflow_run_id" not in meta, stage
        assert meta["machine"]["torch"] and meta["machine"]["cores"] >= 1
        assert f"`{stage}`" in doc  # the appendix lists it
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
    assert set(acc["decimals"]) == {"1", "4", "exact"} and (acc["images"] == 300).all()
    # per-image correctness is stored: the accuracy is its mean
    for _, r in acc.iterrows():
        assert unpack_correct(r["correct"], 300).float().mean().item() == pytest.approx(r["top1"])
    exact = acc.set_index("decimals").loc["exact", "top1"]
    assert 0.4 < exact < 1.0  # the tiny CNN is trained: far above chance
    assert f"{100 * exact:.2f}%" in _section(doc, 1)
    timing = pd.read_csv(workdir / "store/uniform_decimals/timing.csv")
    assert len(timing) == 3 * 3 and (timing["seconds"] > 0).all()
    # retraining: every assignment once per seed, both controls, the exact row the same model as section 1
    rows = pd.read_csv(workdir / "store/retraining/retraining.csv")
    count = rows.groupby("variant").size().to_dict()
    assert count == {"as_is": 5, "retrained": 6, "fp32_finetune": 2, "batchnorm_reestimated": 3}, count
    assert rows[(rows["assignment"] == "fp32") & (rows["variant"] == "as_is")]["top1"].iloc[0] == exact
    assert rows["correct"].notna().all() and (rows["images"] == 300).all()
    # the additions claim: the same multiplier with 0 and 6 accumulator bits dropped
    accumulation = pd.read_csv(workdir / "store/accumulation/accumulation.csv")
    assert sorted(accumulation["truncated_bits"].unique()) == [0, 6] and len(accumulation) == 4
    # the recurrent model: exact and 2 multipliers as they are, the worst retrained, the exact one fine-tuned
    recurrent = pd.read_csv(workdir / "store/recurrent/recurrent.csv")
    assert (recurrent["images"] == 183).all() and len(recurrent) == 5
    retrained = recurrent[recurrent["variant"] == "retrained"]
    assert list(retrained["multiplier"]) == ["mitchell_w2_s8"]  # the least accurate of the two
    # section 9: the lookup anchors were timed by the same run, and the document quotes them
    anchors = pd.read_csv(workdir / "store/emulation_speed/emulation_speed_lookup.csv").set_index("path")
    assert set(anchors.index) == {"table", "reference"} and (anchors["batch"] == 1).all()
    assert (anchors["lookup_ms"] > 0).all() and (anchors["exact_ms"] > 0).all()
    for path, r in anchors.iterrows():
        assert f"**{r['model_ratio']:.0f}x** ({r['model_ratio_min']:.0f}-" in _section(doc, 9), path
    # the headline: the study's trials priced under both presets; its references measured held out
    trials = pd.read_csv(workdir / "store/headline_front/trials.csv")
    assert len(trials) == 5 and trials["on_front"].any()
    assert (trials["horowitz_45nm:energy_uj"] > trials["horowitz_45nm_onchip:energy_uj"]).all()
    held_out = pd.read_csv(workdir / "store/headline_front/held_out.csv")
    assert {"exact", "exact_int8", "uniform"} <= set(held_out["role"]) and (held_out["images"] == 300).all()
    assert held_out.set_index("label").loc["exact", "top1"] == exact  # the same model on the same images

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
    assert _section(doc, 9) == _section(before, 9)  # the rest is unchanged


def test_an_unknown_stage_is_refused_with_the_list(workdir: Path) -> None:
    done = run_module(workdir, "dse.report", "report.stages=[paper9]", "report.store=store", timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode == 2
    assert "unknown stage(s) ['paper9']" in said and "uniform_decimals" in said
    assert "Traceback" not in said and not (workdir / "store").exists()
