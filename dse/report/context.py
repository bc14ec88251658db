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
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from dse.assignment import Assignment
from dse.candidates.accuracy_statistics import pack_correct
from dse.candidates.evaluator import CandidateEvaluator
from dse.config_building import build_tracker, build_trained_model, candidate_evaluator, evaluator_on
from dse.config_paths import CONFIG_DIR
from dse.cost.energy import EnergyModel
from dse.exceptions import ConfigError
from dse.tracking.tracker import Tracker

__all__ = ["ENERGY_SPLIT", "NotMeasured", "ReportContext", "RowLog"]

# the energy components a reviewer asks for (stored per hardware preset): column -> LayerEnergy attribute
ENERGY_SPLIT = {
    "multiply_uj": "multiply_pj",
    "accumulate_uj": "add_pj",
    "weight_memory_uj": "weight_memory_pj",
    "activation_memory_uj": "activation_memory_pj",
}

_logger = logging.getLogger(__name__)


class NotMeasured(LookupError):
    """A stage's table that may not be quoted: not stored, or stored before the held-out protocol."""


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

    def get(self, **key: Any) -> dict[str, Any]:
        """The row whose columns equal ``key`` (any subset of the columns)."""
        wanted = {k: str(v) for k, v in key.items()}
        for row in self.rows:
            if all(str(row.get(k)) == v for k, v in wanted.items()):
                return row
        raise KeyError(f"No row of {self.path} has {key}.")

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

    def stored_table(self, stage: str, name: str) -> pd.DataFrame:
        """``name`` of a stage that finished; :class:`NotMeasured` (saying how to compute it) otherwise."""
        if not self.is_stored(stage):
            raise NotMeasured(f"stage `{stage}` not computed: `python -m dse.report report.stages=[{stage}]`")
        return self.table(stage, name)

    def held_out_table(self, stage: str, name: str) -> pd.DataFrame:
        """``name`` of a stage that finished under the held-out protocol (its rows carry per-image results in
        ``correct``); :class:`NotMeasured` otherwise, so that no accuracy from the images that chose it is quoted."""
        rows = self.stored_table(stage, name)
        if "correct" not in rows.columns:
            raise NotMeasured(f"stage `{stage}` stored before the held-out protocol; recompute it")
        return rows

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

    def for_study(self, study: str, keep: tuple[str, ...] = ("",)) -> ReportContext:
        """A context for the committed study ``study`` (its model, data, space and hardware) with this report's
        settings, and those of the report's own overrides that start with one of ``keep`` (all by default; a
        study on other data keeps only ``("tracking",)``)."""
        overrides = [f"study={study}", *[o for o in self.overrides if o.startswith(keep)]]
        if GlobalHydra.instance().is_initialized():  # inside python -m dse.report
            cfg = compose("report", overrides)
        else:
            with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
                cfg = compose("report", overrides)
        with open_dict(cfg):
            cfg.report = self.cfg.report
        return ReportContext(cfg, self.overrides)

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
        """Candidates evaluated on the held-out images (``final_eval.data``: the half of the test set no search,
        calibration or screening reads), with the search set's activation ranges: the model measured is the
        one a search scores."""
        return self.search_set.on(evaluator_on(self.cfg, self.cfg.final_eval.data))

    def measure(self, assignment: Assignment, candidates: CandidateEvaluator | None = None) -> dict[str, Any]:
        """``assignment`` on the held-out images (or ``candidates``' images): top-1, top-5, the images, their
        per-image correctness (:mod:`dse.report.correctness`) and the cost model's energy by component."""
        candidates = candidates if candidates is not None else self.test_set
        top1, top5 = candidates.evaluator.correct(candidates.candidate(assignment))
        costs = candidates.costs(candidates.cost_table(candidates.model, assignment))
        return {
            "top1": float(top1.float().mean()),
            "top5": float(top5.float().mean()),
            "images": len(top1),
            "correct": pack_correct(top1),
            "energy_uj": costs["energy_uj"],
            "mean_weight_bits": costs["mean_weight_bits"],
            "modeled_latency_us": costs["modeled_latency_us"],
            **self.energy_by_preset(assignment, candidates),
        }

    @cached_property
    def energy_presets(self) -> dict[str, EnergyModel]:
        """The energy model of each ``report.hardware_presets`` (``conf/hardware/<name>.yaml``): every stored
        row is priced under each, since whether a multiplier matters depends on the dataflow."""
        presets = {}
        for name in self.settings.get("hardware_presets", []):
            path = CONFIG_DIR / "hardware" / f"{name}.yaml"
            if not path.is_file():
                known = sorted(p.stem for p in path.parent.glob("*.yaml"))
                raise ConfigError(f"report.hardware_presets: no preset {name!r} in conf/hardware/; known: {known}.")
            presets[str(name)] = instantiate(OmegaConf.load(path).energy)
        return presets

    def energy_by_preset(
        self, assignment: Assignment, candidates: CandidateEvaluator | None = None
    ) -> dict[str, float]:
        """``<preset>:<component>`` in uJ per inference for every preset (components: ``ENERGY_SPLIT``, and
        ``energy_uj`` their sum); the cost model only, nothing evaluated."""
        candidates = candidates if candidates is not None else self.search_set
        shapes = {**candidates.shapes, **candidates.unemulated}
        out: dict[str, float] = {}
        for preset, model in self.energy_presets.items():
            layers = model.estimate(candidates.model, shapes, assignment).values()
            for component, attribute in ENERGY_SPLIT.items():
                out[f"{preset}:{component}"] = sum(getattr(e, attribute) for e in layers) / 1e6
            out[f"{preset}:energy_uj"] = sum(e.total_pj for e in layers) / 1e6
        return out

    @cached_property
    def tracker(self) -> Tracker:
        return build_tracker(self.cfg, experiment="report")

    def log_run(self, stage: str, params: Mapping[str, object], files: Iterable[Path]) -> str | None:
        """One MLflow run holding a stage's stored tables: the id the appendix lists."""
        run_id = self.tracker.log_standalone_run(
            f"report-{stage}", {"dse_role": "report", "dse_report_stage": stage}, params, list(files), stage
        )
        return run_id or None
