"""Which proposals are evaluated: each assignment once, and never more than the budget with many workers.

The search (:mod:`dse.study.runner`) and its replay against a stored grid (:mod:`dse.study.replay`)
apply the same rules through :class:`TrialPolicy`:

- the all-exact baseline is enqueued once (trial 0 of a new study), then, with ``seed_uniform``,
  every uniform assignment (:func:`enqueue_starting_points`);
- each trial records its assignment's key (``assignment_key``); a trial proposing one already
  evaluated, or being evaluated by a live worker, is PRUNED with ``duplicate_of``
  (:meth:`TrialPolicy.duplicate_of`). A trial stopped by screening counts as evaluated;
- a RUNNING trial counts as "being evaluated" only on storages with a heartbeat (Optuna fails dead
  workers' trials there), and never for its own retry: a dead trial must not block its retry;
- with several workers the budget stays exact: a trial starts evaluating only while the COMPLETE
  trials plus the RUNNING trials numbered before it are fewer than the budget
  (:meth:`TrialPolicy.claim_budget_slot`).
"""

from __future__ import annotations

import logging
import time
import warnings

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from dse.optuna_internals import stored_trial
from dse.search_spaces import BoundSpace

__all__ = [
    "DUPLICATE_ATTR",
    "KEY_ATTR",
    "SCREENED_ATTR",
    "TrialPolicy",
    "count_complete",
    "enqueue_starting_points",
    "fail_stale_trials",
]

_logger = logging.getLogger(__name__)
KEY_ATTR = "assignment_key"
DUPLICATE_ATTR = "duplicate_of"
SCREENED_ATTR = "screening_reason"  # a trial stopped by screening: its assignment counts as evaluated
_BUDGET_POLL_S = 2.0  # how often a trial waiting for a budget slot looks again


def count_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def enqueue_starting_points(study: optuna.Study, space: BoundSpace, seed_uniform: bool, budget: int) -> None:
    """The all-exact baseline, then (``seed_uniform``) the "all layers at one choice" assignments, as many as
    the budget of ``budget`` COMPLETE trials holds after the baseline; each once. (More would wait in the
    queue ahead of the retries of dead trials, which then never ran.)"""
    study.enqueue_trial(space.baseline_params(), skip_if_exists=True)
    uniform = space.uniform_params() if seed_uniform else []
    if len(uniform) > budget - 1:
        _logger.info(
            "The budget of %d trials holds the exact model and %d of the space's %d uniform settings.",
            budget,
            max(0, budget - 1),
            len(uniform),
        )
    for params in uniform[: max(0, budget - 1)]:
        study.enqueue_trial(params, skip_if_exists=True)


def fail_stale_trials(study: optuna.Study) -> None:
    """FAIL (and so retry) RUNNING trials whose worker's heartbeat is stale: a dead worker's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # the API is stable in use, marked experimental
        optuna.storages.fail_stale_trials(study)


class TrialPolicy:
    """The duplicate and budget rules of one study.

    Args:
        study: the study whose trials are judged.
        budget: the number of COMPLETE trials the study should hold.
        running_is_live: the storage fails dead workers' trials (a heartbeat), so a RUNNING
            trial is really being evaluated; without one it proves nothing.
    """

    def __init__(self, study: optuna.Study, budget: int, running_is_live: bool = True) -> None:
        self.study = study
        self.budget = budget
        self.running_is_live = running_is_live

    def retried_by(self, trial: optuna.Trial) -> set[int]:
        """The numbers of the failed trials that ``trial`` re-runs."""
        return set(stored_trial(self.study, trial).system_attrs.get("retry_history", []))

    def duplicate_of(self, key: str, number: int) -> int | None:
        """The trial that evaluated (or is evaluating) the assignment ``key`` before trial ``number``.

        FAIL trials and PRUNED duplicates never count (a trial stopped by screening does: its assignment
        was evaluated); a RUNNING one counts only if it is live (``running_is_live``), started earlier,
        and is not a trial this one retries.
        """
        trials = self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)
        )
        me = next((t for t in trials if t.number == number), None)
        retried = set(me.system_attrs.get("retry_history", [])) if me is not None else set()
        for t in trials:
            if t.number == number or t.number in retried or t.user_attrs.get(KEY_ATTR) != key:
                continue
            if t.state == TrialState.PRUNED and SCREENED_ATTR not in t.user_attrs:
                continue  # a duplicate: the evaluation is another trial's
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (self.running_is_live and t.number < number):
                return t.number
        return None

    def prune_if_duplicate(self, trial: optuna.Trial, key: str, when: str = "") -> None:
        """Raise TrialPruned (recorded with ``duplicate_of``) if ``key`` is another trial's evaluation."""
        duplicate = self.duplicate_of(key, trial.number)
        if duplicate is not None:
            trial.set_user_attr(DUPLICATE_ATTR, duplicate)
            raise optuna.TrialPruned(f"same assignment as trial {duplicate}{when}")

    def claim_budget_slot(self, trial: optuna.Trial) -> None:
        """Return once ``trial`` may evaluate without overshooting the budget; PRUNE it (``budget_reached``)
        when other workers' trials complete the budget first.

        The trials ahead are the RUNNING ones numbered before this one (a live heartbeat says they are
        being evaluated), except those this trial re-runs; a trial never waits for a later one, so the
        earliest always proceeds. A dead worker's trial stops blocking when its heartbeat goes stale
        (failed here, retried later).
        """
        retried = self.retried_by(trial)
        waited = False
        while True:
            trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
            complete = sum(t.state == TrialState.COMPLETE for t in trials)
            if complete >= self.budget:
                trial.set_user_attr("budget_reached", True)
                raise optuna.TrialPruned(f"the budget of {self.budget} complete trials was reached by other workers")
            if not self.running_is_live:
                return
            ahead = sum(
                t.state == TrialState.RUNNING and t.number < trial.number and t.number not in retried for t in trials
            )
            if complete + ahead < self.budget:
                return
            if not waited:
                _logger.info(
                    "Trial %d waits: %d complete + %d running elsewhere fill the budget of %d.",
                    trial.number,
                    complete,
                    ahead,
                    self.budget,
                )
                waited = True
            time.sleep(_BUDGET_POLL_S)
            fail_stale_trials(self.study)
