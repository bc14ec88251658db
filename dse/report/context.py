"""What every report stage shares: its config, its stored results, and the evaluators it measures with.

A stage writes its results as small files under ``report.store/<stage>/`` (CSV tables and
``meta.json``) and renders its section only from them, so ``report.recompute=false`` rebuilds the
document from what is stored, on any machine, without evaluating anything.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig
from torch import nn

from dse.candidates.evaluator import CandidateEvaluator
from dse.config_building import build_tracker, build_trained_model, candidate_evaluator, evaluator_on
from dse.tracking.tracker import Tracker

__all__ = ["ReportContext", "RowLog"]

_logger = logging.getLogger(__name__)


class RowLog:
    """A CSV of results written one row at a time, so an interrupted stage resumes where it stopped.

    ``key`` names the columns that identify a row; :meth:`has` says whether one is already there.
    """

    def __init__(self, path: Path, key: Sequence[str]) -> None:
        self.path = path
        self.key = list(key)
        self.rows: list[dict[str, Any]] = pd.read_csv(path).to_dict("records") if path.is_file() else []

    def _key(self, row: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(row[k]) for k in self.key)

    def has(self, **key: Any) -> bool:
        wanted = self._key(key)
        return any(self._key(r) == wanted for r in self.rows)

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(self.rows).to_csv(self.path, index=False)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


class ReportContext:
    """The composed ``conf/report.yaml`` and where a stage reads and writes.

    Args:
        cfg: the composed config (the search's groups plus ``report``).
        overrides: the command line's overrides other than ``report.*`` (the model, the data, the
            hardware): passed on to the studies and benchmarks a stage runs as their own commands.
    """

    def __init__(self, cfg: DictConfig, overrides: Sequence[str] = ()) -> None:
        self.cfg = cfg
        self.settings = cfg.report
        self.overrides = list(overrides)
        self.store = Path(cfg.report.store)
        self.figures = Path(cfg.report.figures)
        self.work_dir = Path(cfg.report.work_dir)

    # -- stored results -------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.store / stage

    def rows(self, stage: str, name: str, key: Sequence[str]) -> RowLog:
        return RowLog(self.stage_dir(stage) / f"{name}.csv", key)

    def table(self, stage: str, name: str) -> pd.DataFrame:
        path = self.stage_dir(stage) / f"{name}.csv"
        if not path.is_file():
            raise FileNotFoundError(path)
        return pd.read_csv(path)

    def meta(self, stage: str) -> dict[str, Any]:
        path = self.stage_dir(stage) / "meta.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def update_meta(self, stage: str, **values: Any) -> None:
        meta = {**self.meta(stage), **values}
        path = self.stage_dir(stage) / "meta.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")

    def is_stored(self, stage: str) -> bool:
        return bool(self.meta(stage).get("complete"))

    def figure(self, name: str) -> Path:
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / name

    def link(self, path: Path) -> str:
        """``path`` as the document links it (relative to the document's folder)."""
        return os.path.relpath(path, Path(self.settings.output).parent)

    # -- measuring --------------------------------------------------------------------------
    @cached_property
    def model(self) -> nn.Module:
        return build_trained_model(self.cfg.model)

    @cached_property
    def search_set(self) -> CandidateEvaluator:
        """Candidates evaluated on the search set (``data``: the shipped 2,000-image subset by default)."""
        return candidate_evaluator(self.cfg, self.model)

    @cached_property
    def test_set(self) -> CandidateEvaluator:
        """Candidates evaluated on the full test set (``final_eval.data``), with the search set's activation
        ranges: the model measured is the one a search scores."""
        return self.search_set.on(evaluator_on(self.cfg, self.cfg.final_eval.data))

    @cached_property
    def tracker(self) -> Tracker:
        return build_tracker(self.cfg, experiment="report")

    def log_run(self, stage: str, params: Mapping[str, object], files: Iterable[Path]) -> str | None:
        """One MLflow run holding a stage's stored tables: the id the appendix lists."""
        run_id = self.tracker.log_standalone_run(
            f"report-{stage}", {"dse_role": "report", "dse_report_stage": stage}, params, list(files), stage
        )
        return run_id or None
