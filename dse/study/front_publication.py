"""The study's front as trials complete: its hypervolume against a fixed reference, and its tracked views.

The hypervolume reference is fixed once, from the all-exact baseline (0 for maximised metrics,
1.1 x the baseline for minimised ones), and kept in the study, so every worker and every resume
measures progress on the same scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
import pandas as pd
from optuna.trial import TrialState

from dse.assignment import BASELINE_KEY
from dse.candidates.evaluator import CandidateEvaluator
from dse.objectives import Objective
from dse.search_spaces import BoundSpace
from dse.study.trial_policy import KEY_ATTR
from dse.tracking.pareto import front_hypervolume
from dse.tracking.tracker import Tracker

__all__ = ["FrontPublisher", "hypervolume_reference"]

_REFERENCE_ATTR = "hypervolume_reference"


def hypervolume_reference(study: optuna.Study, objectives: Sequence[Objective]) -> list[float] | None:
    """The study's stored reference, else the one its complete baseline trial gives (not stored here): a
    worker killed between the baseline's completion and its next front refresh leaves none stored, and a
    reader (``dse.status``) must still measure on the scale every worker uses."""
    stored = study.user_attrs.get(_REFERENCE_ATTR)
    if stored is not None:
        return list(stored)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get(KEY_ATTR) == BASELINE_KEY and t.values is not None:
            return [0.0 if o.direction == "maximize" else 1.1 * v for o, v in zip(objectives, t.values, strict=False)]
    return None


class FrontPublisher:
    """Publish ``study``'s front to ``tracker``: the CSV and hypervolume at every complete trial, the plots
    and the per-layer costs of the front's trials every ``plot_every`` trials and at the end."""

    def __init__(
        self,
        study: optuna.Study,
        space: BoundSpace,
        candidates: CandidateEvaluator,
        objectives: Sequence[Objective],
        tracker: Tracker,
        plot_every: int = 5,
    ) -> None:
        self.study, self.space, self.candidates, self.objectives = study, space, candidates, objectives
        self.tracker, self.plot_every = tracker, plot_every
        self.last_logged_step: int | None = None  # the complete-trial count last logged

    def reference_point(self) -> list[float] | None:
        """Hypervolume reference: 0 for maximised metrics, 1.1 x baseline for minimised ones (fixed once)."""
        stored = self.study.user_attrs.get(_REFERENCE_ATTR)
        ref = hypervolume_reference(self.study, self.objectives)
        if stored is None and ref is not None:
            self.study.set_user_attr(_REFERENCE_ATTR, ref)
        return ref

    def current_hypervolume(self) -> float | None:
        return front_hypervolume(self.study, self.objectives, self.reference_point())

    def publish(self, done: int, budget: int, final: bool = False) -> float | None:
        """Refresh the tracked front after ``done`` complete trials; return the hypervolume."""
        hv = self.current_hypervolume()
        plots = final or done % self.plot_every == 0 or done >= budget
        fresh = done != self.last_logged_step  # the final refresh after the last trial adds no point
        # the per-layer cost tables only when a tracker draws the front (never with tracking=none)
        self.tracker.log_front(
            self.study, self.objectives, hv, done, plots=plots, metrics=fresh, layers=self.front_layers
        )
        self.last_logged_step = done
        return hv

    def front_layers(self) -> pd.DataFrame:
        """Per-layer cost breakdown (energy, latency, widths) of every Pareto trial, from the cost models alone."""
        tables = []
        for t in self.study.best_trials:
            table = self.candidates.cost_table(self.candidates.model, self.space.assignment(t.params))
            table.insert(0, "trial", t.number)
            tables.append(table)
        return pd.concat(tables, ignore_index=True)
