"""The trial loop: a study run until it holds its budget of COMPLETE trials.

``n_trials`` is the study's target number of COMPLETE trials, not a per-run increment:
re-running the same command after a crash finishes the budget and does nothing more. The
loop is cut by concern: :mod:`.trial_policy` decides which proposals are evaluated (each
assignment once, the exact budget with many workers), :mod:`.trial_evaluation` evaluates one
trial, :mod:`.front_publication` keeps the tracked front. What is left here: the starting
points, stopping on streaks of duplicates or failures, a clean stop on SIGINT/SIGTERM, and
waiting for other workers' trials once the budget is complete.
"""

from __future__ import annotations

import logging
import time

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from dse.assignment import BASELINE_KEY
from dse.candidates.evaluator import CandidateEvaluator
from dse.optuna_internals import BaseHeartbeat, storage_of, stored_trial
from dse.search_spaces import BoundSpace
from dse.study.front_publication import FrontPublisher
from dse.study.screening import ScreeningRule
from dse.study.search_retraining import SearchRetraining
from dse.study.settings import StudySettings
from dse.study.storage import RetryDeadTrial
from dse.study.trial_evaluation import TIME_REFERENCE_ATTR, TrialEvaluation, close_dead_runs
from dse.study.trial_policy import (
    DUPLICATE_ATTR,
    TrialPolicy,
    count_complete,
    enqueue_starting_points,
    fail_stale_trials,
)
from dse.tracking.tracker import NullTracker, Tracker
from dse.worker.signals import Interrupted

__all__ = ["BASELINE_KEY", "StudyRunner", "StudySettings", "count_complete"]

_logger = logging.getLogger(__name__)
_SETTLE_POLL_S = 2.0


class StudyRunner:
    """Run ``study`` until it holds ``settings.n_trials`` COMPLETE trials.

    ``running_is_live``: the storage fails dead workers' trials (a heartbeat), so a RUNNING trial is
    really being evaluated; without one it proves nothing. ``retraining``: retrain each trial as it
    completes (``retrain.on=each``). ``screening``: stop hopeless trials after their first images.
    """

    def __init__(
        self,
        study: optuna.Study,
        space: BoundSpace,
        candidates: CandidateEvaluator,
        settings: StudySettings,
        tracker: Tracker | None = None,
        running_is_live: bool = True,
        retraining: SearchRetraining | None = None,
        screening: ScreeningRule | None = None,
    ) -> None:
        self.study, self.space, self.candidates, self.settings = study, space, candidates, settings
        self.tracker: Tracker = tracker if tracker is not None else NullTracker()
        budget = settings.n_trials
        if budget > space.size:
            _logger.warning(
                "n_trials=%d exceeds the %d distinct assignments of this space; capping.", budget, space.size
            )
            budget = space.size
        self.budget = budget
        self.policy = TrialPolicy(study, budget, running_is_live)
        self.evaluation = TrialEvaluation(
            study, space, candidates, settings, self.policy, self.tracker, retraining, screening
        )
        self.front = FrontPublisher(
            study, space, candidates, settings.objectives, self.tracker, self.tracker.plot_every
        )
        self._duplicate_streak = 0
        self._failure_streak = 0
        self._first_failure = ""
        self.stopped_by_failures: str | None = None  # why a streak of failures stopped the search
        self._progress: tqdm | None = None
        self.interrupted_trial: int | None = None  # set when a signal stopped one

    def run(self) -> int:
        """Evaluate trials until the budget is complete; return the number of COMPLETE trials."""
        self.study.set_user_attr("n_trials", self.budget)  # the budget, for the summary on the parent run
        reference = self.study.user_attrs.get(TIME_REFERENCE_ATTR)
        if reference is not None:  # every worker and resume scales measured times by the same exact-model time
            self.candidates.reference_time_s = float(reference)
        enqueue_starting_points(self.study, self.space, self.settings.seed_uniform, self.budget)
        done = count_complete(self.study)
        if done >= self.budget:
            self.front.last_logged_step = done  # its points were logged when those trials completed
            _logger.info(
                "Study %r already holds %d/%d complete trials: nothing to do.", self.study.study_name, done, self.budget
            )
            return done
        self._progress = tqdm(total=self.budget, initial=done, desc=self.study.study_name, unit="trial")
        try:
            self.study.optimize(self.evaluation, callbacks=[self._after_trial], catch=(RuntimeError,))
        except Interrupted as exc:
            self._record_interrupted(exc)
            raise
        finally:
            self._progress.close()
        self._settle()
        return count_complete(self.study)

    def publish(self, done: int, final: bool = False) -> None:
        """Refresh the tracked front (and the progress bar's hypervolume) after ``done`` complete trials."""
        hv = self.front.publish(done, self.budget, final=final)
        if self._progress is not None:
            self._progress.set_postfix(front=len(self.study.best_trials), hv=f"{hv:.4f}" if hv is not None else "-")

    def _record_interrupted(self, exc: Interrupted) -> None:
        """The trial a signal stopped: FAIL, tagged ``interrupted``, its parameters queued again."""
        trial = self.evaluation.current
        if trial is None or stored_trial(self.study, trial).state != TrialState.RUNNING:
            return  # none, or it had finished: nothing was lost
        trial.set_user_attr("interrupted", str(exc))
        self.study.tell(trial, state=TrialState.FAIL)
        storage = storage_of(self.study)
        retry = storage.get_heartbeat_stale_trial_callback() if isinstance(storage, BaseHeartbeat) else None
        (retry or RetryDeadTrial())(self.study, stored_trial(self.study, trial))
        self.interrupted_trial = trial.number

    def _settle(self) -> None:
        """Once the budget is complete, wait for other workers' RUNNING trials to end, failing those of
        dead workers when their heartbeat goes stale, so the study holds no trial left RUNNING forever."""
        storage = storage_of(self.study)
        if not self.policy.running_is_live or not isinstance(storage, BaseHeartbeat):
            return
        interval = storage.get_heartbeat_interval() or 0
        deadline = time.monotonic() + 3 * interval + float(getattr(storage, "grace_period", None) or 0) + 5
        while self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) and time.monotonic() < deadline:
            fail_stale_trials(self.study)
            time.sleep(min(_SETTLE_POLL_S, interval or _SETTLE_POLL_S))
        close_dead_runs(self.study, self.tracker)

    def _failure_of(self, number: int) -> str:
        """``trial 3: ValueError: ...``: what trial ``number`` raised, as far as this worker saw it."""
        error = self.evaluation.last_error
        if error is None or error[0] != number:
            return f"trial {number} (no error recorded by this worker)"
        text = str(error[1]).strip().splitlines()
        return f"trial {number}: {type(error[1]).__name__}: {text[0] if text else ''}"

    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.PRUNED and DUPLICATE_ATTR in trial.user_attrs:
            self._duplicate_streak += 1
            if self._duplicate_streak >= self.settings.max_duplicate_streak:
                _logger.warning(
                    "%d duplicate proposals in a row: the sampler has (nearly) exhausted this space. Stopping.",
                    self._duplicate_streak,
                )
                study.stop()
            return
        self._duplicate_streak = 0
        if trial.state == TrialState.FAIL:
            self._failure_streak += 1
            if self._failure_streak == 1:
                self._first_failure = self._failure_of(trial.number)
            if self._failure_streak >= self.settings.max_failure_streak:
                self.stopped_by_failures = (
                    f"{self._failure_streak} trials failed in a row, so the search stopped (the study keeps every "
                    f"finished trial). The first: {self._first_failure}"
                )
                study.stop()
                return
            _logger.warning("Trial %d failed; the search goes on.", trial.number)
        else:
            self._failure_streak = 0
        done = count_complete(study)
        if trial.state == TrialState.COMPLETE:
            self.publish(done)
            if self._progress is not None:
                self._progress.update(1)
        if done >= self.budget:
            study.stop()
