"""The report's rules that need no evaluation: the README's results block is what the stored data gives, a
dirty tree is refused, a stage stored before the held-out protocol is not quoted, and every accuracy carries
its interval and every difference its paired test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from dse.candidates.accuracy_statistics import pack_correct
from dse.exceptions import ConfigError
from dse.report import ReportContext
from dse.report import run as report_run
from dse.report.context import NotMeasured
from dse.report.correctness import accuracy_cell, difference_cell
from dse.report.document import _appendix
from dse.report.paper1_decimals import UNIFORM as UNIFORM_DECIMALS
from dse.report.paper3_formats import STAGE as FORMATS
from dse.report.paper3_formats import narrowest_within
from dse.report.readme_results import BEGIN, END, readme_block, update_readme
from dse.report.verdicts import CLAIMS, PENDING, verdicts
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]


def _context(store: Path) -> ReportContext:
    return ReportContext(compose_config([f"report.store={store}"], config_name="report"))


def test_the_readme_results_block_is_exactly_what_the_stored_stages_give() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme_block(_context(ROOT / "docs/results_data"))
    assert block in readme, "README.md's results block is stale: run python -m dse.report report.recompute=false"
    # and its numbers are the stored ones: the exact model's held-out accuracy, as stored
    exact = pd.read_csv(ROOT / "docs/results_data/uniform_decimals/accuracy.csv").astype({"decimals": str})
    exact_row = exact.set_index("decimals").loc["exact"]
    if "correct" in exact.columns:
        assert f"{100 * exact_row['top1']:.2f}%" in block


def test_update_readme_replaces_only_its_block_and_refuses_a_readme_without_one(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{BEGIN}\nold\n{END}\n\nrest\n")
    update_readme(readme, f"{BEGIN}\nnew\n{END}")
    assert readme.read_text() == f"intro\n\n{BEGIN}\nnew\n{END}\n\nrest\n"
    readme.write_text("no block\n")
    with pytest.raises(ConfigError, match=r"report\.readme=null"):
        update_readme(readme, "x")


def test_a_dirty_tree_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(report_run, "git_commit", lambda: "0123456789ab-dirty")
    ctx = _context(tmp_path / "store")
    with pytest.raises(ConfigError, match=r"uncommitted changes \(0123456789ab-dirty\).*report.allow_dirty=true"):
        report_run._check_clean(ctx, "uniform_decimals")
    allowed = ReportContext(
        compose_config([f"report.store={tmp_path}", "report.allow_dirty=true"], config_name="report")
    )
    assert report_run._check_clean(allowed, "uniform_decimals") == "0123456789ab-dirty"
    monkeypatch.setattr(report_run, "git_commit", lambda: None)
    with pytest.raises(ConfigError, match="not a git checkout"):
        report_run._check_clean(ctx, "uniform_decimals")


def test_a_stage_stored_before_the_held_out_protocol_is_not_quoted(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "uniform_decimals").mkdir(parents=True)
    (store / "uniform_decimals/meta.json").write_text(json.dumps({"complete": True}))
    pd.DataFrame({"decimals": ["4", "exact"], "top1": [0.87, 0.87], "test_images": [10000, 10000]}).to_csv(
        store / "uniform_decimals/accuracy.csv", index=False
    )
    found = {v.claim: v for v in verdicts(_context(store))}
    assert found["baseline accuracy"].verdict == PENDING
    assert "before the held-out protocol" in found["baseline accuracy"].why
    assert found["recurrent layers tolerate approximation; accuracy degrades with approximation level"].why.startswith(
        "stage `recurrent` not computed"
    )
    # the document and the README block use the same check through the stage
    assert UNIFORM_DECIMALS.is_stale(_context(store))
    with pytest.raises(NotMeasured, match="before the held-out protocol"):
        _context(store).held_out_table("uniform_decimals", "accuracy")


def test_the_narrowest_uniform_format_is_the_fewest_bits_within_the_limit() -> None:
    uniform = pd.DataFrame(
        {
            "format": ["fp32", "int8", "e4m3", "int6", "e2m1"],
            "bits": [32, 8, 8, 6, 4],
            "top1": [0.870, 0.868, 0.866, 0.851, 0.800],
        }
    )
    assert narrowest_within(uniform, 1.0)["format"] == "e4m3"  # 8 bits within 1 point; ties by name
    assert narrowest_within(uniform, 2.0)["format"] == "int6"  # 1.9 points lost
    assert narrowest_within(uniform, 0.1)["format"] == "fp32"


def test_d4_is_reproduced_when_no_image_changes_significantly(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "uniform_decimals").mkdir(parents=True)
    (store / "uniform_decimals/meta.json").write_text(json.dumps({"complete": True}))
    exact = torch.tensor([True] * 870 + [False] * 130)
    d4 = exact.clone()
    d4[0], d4[900] = False, True  # one image lost, one won: the same accuracy
    d1 = torch.zeros(1000, dtype=torch.bool)
    d1[::10] = True
    rows = [
        {"decimals": d, "top1": float(c.float().mean()), "images": 1000, "correct": pack_correct(c)}
        for d, c in (("1", d1), ("4", d4), ("exact", exact))
    ]
    pd.DataFrame(rows).to_csv(store / "uniform_decimals/accuracy.csv", index=False)
    found = {v.claim: v for v in verdicts(_context(store))}
    assert found["d = 4 keeps the accuracy"].verdict == "reproduced"
    assert "+0.00 points (McNemar p 1)" in found["d = 4 keeps the accuracy"].ours
    assert found["baseline accuracy"].ours.startswith("87.00% [84.8, 88.9]")


def test_accuracy_and_difference_cells() -> None:
    a = torch.tensor([True] * 90 + [False] * 10)
    b = torch.tensor([True] * 80 + [False] * 20)
    row_a = {"top1": 0.9, "images": 100, "correct": pack_correct(a)}
    row_b = {"top1": 0.8, "images": 100, "correct": pack_correct(b)}
    assert accuracy_cell(row_a) == "90.00% [82.6, 94.5]"  # Wilson's interval of 90/100
    assert difference_cell(row_a, row_b) == "+10.00 (p 0.002)"  # McNemar: 10 images only a got right
    assert accuracy_cell({"top1": 0.9, "images": 100}) == "90.00% [82.6, 94.5]"  # from the count alone


def test_the_committed_store_names_no_identifier_of_an_unshipped_store() -> None:
    for meta in (ROOT / "docs/results_data").glob("*/meta.json"):
        text = meta.read_text()
        assert "mlflow_run_id" not in text and "run_ids" not in text, meta
    for csv in (ROOT / "docs/results_data").glob("*/*.csv"):
        assert "mlflow_run_id" not in pd.read_csv(csv, nrows=1).columns, csv


def test_the_committed_store_copies_cleanly(tmp_path: Path) -> None:
    """The document rebuilds from a copy of the store alone (nothing read from elsewhere)."""
    shutil.copytree(ROOT / "docs/results_data", tmp_path / "store")
    found = verdicts(_context(tmp_path / "store"))
    assert [v.claim for v in found] == [c.claim for c in CLAIMS]
    assert not [v.why for v in found if "is missing;" in v.why or "stored stage has no" in v.why]  # files, rows


def _formats_store(tmp_path: Path, top1: dict[str, float]) -> ReportContext:
    """A formats stage holding per-image results with these accuracies (of 1,000 images)."""
    store = tmp_path / "store"
    (store / "formats").mkdir(parents=True)
    (store / "formats/meta.json").write_text(json.dumps({"complete": True}))
    rows = []
    for name, acc in top1.items():
        correct = torch.zeros(1000, dtype=torch.bool)
        correct[: round(1000 * acc)] = True  # nested: a narrower format loses only images the wider one lost
        bits = 32 if name == "fp32" else int(name[3:])
        rows.append({"format": name, "bits": bits, "top1": acc, "images": 1000, "correct": pack_correct(correct)})
    pd.DataFrame(rows).to_csv(store / "formats/uniform.csv", index=False)
    return _context(store)


def test_quantization_robustness_needs_int8_within_a_point_and_a_loss_that_grows_with_the_noise(
    tmp_path: Path,
) -> None:
    claim = "robustness to quantization noise"
    graceful = _formats_store(tmp_path / "a", {"fp32": 0.87, "int16": 0.87, "int8": 0.866, "int6": 0.85, "int4": 0.6})
    found = {v.claim: v for v in verdicts(graceful)}[claim]
    assert found.verdict == "reproduced"
    assert found.ours.startswith("int16 +0.00, int8 -0.40, int6 -2.00, int4 -27.00 points from float32")
    assert "McNemar p 0.12" in found.ours and "1,000 held-out images" in found.ours
    fragile = _formats_store(tmp_path / "b", {"fp32": 0.87, "int16": 0.87, "int8": 0.84, "int6": 0.83, "int4": 0.6})
    assert {v.claim: v for v in verdicts(fragile)}[claim].verdict == "refuted"  # int8 loses 3 points


def test_the_appendix_names_the_commits_a_stage_s_study_trials_ran_on(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "formats").mkdir(parents=True)
    (store / "formats/meta.json").write_text(json.dumps({"complete": True, "commit": "0123456789ab"}))
    pd.DataFrame({"trial": [0, 1], "code_commit": ["0123456789ab", "ba9876543210-dirty"]}).to_csv(
        store / "formats/study_trials.csv", index=False
    )
    text = _appendix(_context(store), [FORMATS])
    assert "`0123456789ab` (its study's trials: `0123456789ab`, `ba9876543210-dirty`)" in text
    assert "**Computed on uncommitted code** (`report.allow_dirty=true`): `formats`" in text
