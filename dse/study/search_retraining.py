"""Retraining inside the search (``retrain.enabled=true``): each Pareto trial after the budget
(``retrain.on=front``), or every trial as it completes (``retrain.on=each``).

A trial keeps ``accuracy`` (before) and gains ``accuracy_retrained``: as a user attribute of
the trial when it is retrained inside it (``each``), else in the study's user attribute
``retrain/<number>`` (a finished trial cannot change; ``front``). Read it with
:func:`retrained_accuracy`. Checkpoints are kept per assignment (not per trial number), so the
retry of a trial killed mid-retraining resumes that retraining, and a retraining that finished
is never repeated (:func:`dse.candidates.retraining.retrain_candidate`). Each retraining is an MLflow run
nested under the study's parent run and tagged with the trial and the trial's run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial
from torch import nn

from dse.assignment import BASELINE_KEY, Assignment, assignment_key
from dse.candidates.evaluator import CandidateEvaluator
from dse.candidates.retraining import RetrainResult, RetrainSettings, check_training_data, retrain_candidate
from dse.exceptions import ConfigError
from dse.objectives import Objective
from dse.search_spaces import BoundSpace
from dse.tracking.pareto import non_dominated
from dse.tracking.tracker import NullTracker, Tracker

__all__ = ["RETRAINED", "SearchRetraining", "check_retrain_settings", "retrained_accuracy", "retrained_front"]

_logger = logging.getLogger(__name__)
RETRAINED = "accuracy_retrained"
_STUDY_ATTR = "retrain/{}"


def check_retrain_settings(retrain: RetrainSettings, objectives: Sequence[Objective]) -> None:
    """Refuse, before anything runs, a retraining setup that cannot give what the objectives ask."""
    wants = any(o.name == RETRAINED for o in objectives)
    if wants and not (retrain.enabled and retrain.on == "each"):
        raise ConfigError(
            f"An objective is {RETRAINED}, which a trial has only if it is retrained as it runs: "
            "set retrain.enabled=true retrain.on=each (or optimise accuracy and retrain the front after)."
        )
    if retrain.enabled:
        check_training_data(retrain)


def retrained_accuracy(study: optuna.Study, trial: FrozenTrial) -> float | None:
    """The trial's accuracy after retraining, wherever the search stored it; None if never retrained."""
    if RETRAINED in trial.user_attrs:
        return float(trial.user_attrs[RETRAINED])
    stored = study.user_attrs.get(_STUDY_ATTR.format(trial.number))
    return float(stored["accuracy_after"]) if stored else None


class SearchRetraining:
    """Retrain a study's candidates with the ``retrain`` config group."""

    def __init__(
        self,
        model: nn.Module,
        space: BoundSpace,
        candidates: CandidateEvaluator,
        retrain: RetrainSettings,
        tracker: Tracker | None = None,
    ) -> None:
        self.model, self.space, self.candidates, self.retrain = model, space, candidates, retrain
        self.tracker: Tracker = tracker if tracker is not None else NullTracker()

    def _label(self, study: optuna.Study, assignment: Assignment) -> str:
        digest = hashlib.sha1(assignment_key(assignment).encode()).hexdigest()[:16]
        return f"{study.study_name}/{digest}"

    def _retrain(
        self, study: optuna.Study, number: int, params: dict[str, Any], run_id: str | None, before: dict[str, float]
    ) -> RetrainResult:
        assignment = self.space.assignment(params)
        tags = {"dse_study": study.study_name, "dse_trial": str(number)}
        if run_id:
            tags["dse_trial_run_id"] = run_id
        if self.tracker.parent_run_id:
            tags["mlflow.parentRunId"] = self.tracker.parent_run_id
        result = retrain_candidate(
            self.model,
            assignment,
            self.candidates,
            self.retrain,
            self._label(study, assignment),
            self.tracker,
            tags,
            before,
        )
        if run_id:
            self.tracker.log_metrics(run_id, {RETRAINED: result.accuracy_after})
        return result

    def wants(self, metrics: dict[str, float], baseline_accuracy: float) -> bool:
        """on=each: whether a just-evaluated trial is retrained (not the baseline; within max_drop_before)."""
        limit = self.retrain.max_drop_before
        return limit is None or baseline_accuracy - metrics["accuracy"] <= float(limit)

    def retrain_trial(self, trial: optuna.Trial, params: dict[str, Any], metrics: dict[str, float]) -> float:
        """on=each: retrain the running trial; returns (and stores on the trial) its accuracy after."""
        result = self._retrain(trial.study, trial.number, params, trial.user_attrs.get("mlflow_run_id"), metrics)
        trial.set_user_attr(RETRAINED, result.accuracy_after)
        trial.set_user_attr("retrain_run_id", result.run_id)
        trial.set_user_attr("retrain_forward", result.training_forward)
        return result.accuracy_after

    def retrain_front(self, study: optuna.Study) -> pd.DataFrame:
        """on=front: retrain every Pareto trial not retrained yet; the front before and after, one row a trial."""
        # the all-exact model has nothing to retrain
        front = [t for t in study.best_trials if assignment_key(self.space.assignment(t.params)) != BASELINE_KEY]
        _logger.info("Retraining %d Pareto trial(s) of %r", len(front), study.study_name)
        for i, trial in enumerate(front, 1):
            if retrained_accuracy(study, trial) is not None:
                continue
            _logger.info("Pareto trial %d (%d/%d)", trial.number, i, len(front))
            before = {k: float(v) for k, v in trial.user_attrs.items() if isinstance(v, int | float)}
            result = self._retrain(study, trial.number, trial.params, trial.user_attrs.get("mlflow_run_id"), before)
            study.set_user_attr(_STUDY_ATTR.format(trial.number), result.as_dict())
        return retrained_front(study)


def retrained_front(study: optuna.Study) -> pd.DataFrame:
    """Every retrained trial of ``study`` (and the all-exact baseline): accuracy before and after, energy,
    and whether each is on the front before (Optuna's) and after (recomputed on accuracy after x energy)."""
    on_front = {t.number for t in study.best_trials}
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        after = retrained_accuracy(study, t)
        if t.user_attrs.get("assignment_key") == BASELINE_KEY:
            after = float(t.user_attrs["accuracy"])  # the exact model: nothing to retrain
        if after is None:
            continue
        rows.append(
            {
                "trial": t.number,
                "accuracy": float(t.user_attrs["accuracy"]),
                RETRAINED: after,
                "energy_uj": float(t.user_attrs["energy_uj"]),
                "pareto_before": t.number in on_front,
                "baseline": t.user_attrs.get("assignment_key") == BASELINE_KEY,
            }
        )
    table = pd.DataFrame(rows, columns=["trial", "accuracy", RETRAINED, "energy_uj", "pareto_before", "baseline"])
    table["pareto_after"] = non_dominated(table[RETRAINED], table["energy_uj"])
    return table.sort_values("energy_uj", ignore_index=True) if not table.empty else table
