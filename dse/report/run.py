"""Running the report: compute the asked stages that are not stored (or all of them again), then the document."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from dse.code_version import git_commit
from dse.exceptions import ConfigError
from dse.report.context import ReportContext
from dse.report.document import write_document
from dse.report.machine import describe_machine
from dse.report.readme_results import readme_block, update_readme
from dse.report.stage import Stage

__all__ = ["run_report"]

_logger = logging.getLogger(__name__)


def _check_clean(ctx: ReportContext, stage: str) -> str | None:
    """The checkout's commit; a dirty tree (or none) is refused unless ``report.allow_dirty``, so that every
    stored number names code a reader can check out."""
    commit = git_commit()
    if (commit is None or commit.endswith("-dirty")) and not ctx.settings.allow_dirty:
        what = "is not a git checkout" if commit is None else f"has uncommitted changes ({commit})"
        raise ConfigError(
            f"Stage {stage}: the code {what}, so its results could not be traced to a commit. Commit (or stash) "
            "the changes to dse/, conf/, benchmarks/, search_spaces/, training/ and run the report again, or pass "
            "report.allow_dirty=true (the document's appendix then marks the stage as computed on a dirty tree)."
        )
    return commit


def _compute(ctx: ReportContext, stage: Stage) -> None:
    commit = _check_clean(ctx, stage.name)
    started = time.perf_counter()
    data = ctx.cfg.final_eval.data
    ctx.update_meta(
        stage.name,
        complete=False,
        machine=describe_machine(),
        commit=commit,
        seeds={
            "evaluation_order": ctx.cfg.evaluation.order_seed,
            "calibration": ctx.cfg.evaluation.calibration_seed,
            "sampler": ctx.cfg.sampler.get("seed"),
            "retrain": ctx.cfg.retrain.seed,
        },
    )
    if stage.reads_test_set:
        ctx.update_meta(
            stage.name,
            search_set={"path": str(ctx.cfg.data.path), "test_subset": ctx.cfg.data.test_subset},
            test_set={"source": str(data.source), "test_subset": data.get("test_subset")},
        )
    try:
        stage.compute(ctx)
    finally:  # an interrupted stage keeps its compute time: the total is what the stage cost
        spent = ctx.meta(stage.name).get("compute_seconds", 0.0) + time.perf_counter() - started
        ctx.update_meta(stage.name, compute_seconds=round(spent, 1))
    files = sorted(p for p in ctx.stage_dir(stage.name).glob("*.csv"))
    # tracked for the MLflow UI; its run id is not stored: the shipped files are the record
    ctx.log_run(stage.name, {"stage": stage.name, "commit": commit}, files)
    ctx.update_meta(
        stage.name,
        complete=True,
        finished=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    )
    _logger.info("Stage %s computed in %.1f min", stage.name, ctx.meta(stage.name)["compute_seconds"] / 60)


def run_report(ctx: ReportContext, stages: Sequence[Stage]) -> Path:
    """Compute ``report.stages`` (those not stored yet, or all of them with ``report.recompute``) and write
    the document from everything stored."""
    known = {s.name: s for s in stages}
    wanted = list(ctx.settings.stages)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ConfigError(f"report.stages: unknown stage(s) {unknown}; the stages are {list(known)}.")
    for name in wanted:
        if ctx.is_stored(name) and not ctx.settings.recompute:
            _logger.info("Stage %s: stored results kept (report.recompute=true recomputes them)", name)
            continue
        if ctx.is_stored(name):  # recompute from scratch; the old results stay aside until the new are complete
            previous = ctx.stage_dir(name).with_name(f"{name}.previous")
            shutil.rmtree(previous, ignore_errors=True)
            ctx.stage_dir(name).rename(previous)
        _logger.info("Stage %s: computing", name)
        _compute(ctx, known[name])
        shutil.rmtree(ctx.stage_dir(name).with_name(f"{name}.previous"), ignore_errors=True)
    out = write_document(ctx, stages)
    _logger.info("Wrote %s", out)
    if ctx.settings.get("readme"):
        update_readme(Path(ctx.settings.readme), readme_block(ctx))
        _logger.info("Updated the results block of %s", ctx.settings.readme)
    return out
