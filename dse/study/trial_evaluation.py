"""One trial: its assignment evaluated (screened, retrained), constrained, and recorded.

:class:`TrialEvaluation` is the objective Optuna calls. It asks the :class:`~dse.study.trial_policy.TrialPolicy`
whether the proposal is evaluated at all, evaluates it with the :class:`~dse.candidates.evaluator.CandidateEvaluator`,
sets the accuracy constraint, keeps every metric as a user attribute and in the trial's tracked run. A
failed trial's run is closed as KILLED by the next trial of any worker, and its retry's run names it
(``dse_retry_of``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import optuna
import torch

from dse.assignment import BASELINE_KEY, Assignment, assignment_key
from dse.candidates.evaluator import CandidateEvaluator, CandidateResult, PartialEvaluation
from dse.code_version import git_commit
from dse.optuna_internals import stored_trial
from dse.search_spaces import BoundSpace
from dse.study.screening import ScreeningRule
from dse.study.search_retraining import RETRAINED, SearchRetraining
from dse.study.settings import StudySettings
from dse.study.storage import retried_trial
from dse.study.trial_policy import KEY_ATTR, SCREENED_ATTR, TrialPolicy
from dse.tracking.tracker import Tracker
from dse.worker.process import scheduler_job, worker_name
from dse.worker.signals import Interrupted

__all__ = ["TIME_REFERENCE_ATTR", "TrialEvaluation", "close_dead_runs"]

TIME_REFERENCE_ATTR = "reference_time_s"  # the exact model's pass time that measured ratios scale


def close_dead_runs(study: optuna.Study, tracker: Tracker) -> None:
    """KILLED for every RUNNING trial run whose trial has ended (a dead worker's, failed by the heartbeat)."""
    running = tracker.running_trial_runs()
    if not running:
        return
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}  # read after the runs
    for run_id, number in running.items():
        state = states.get(number)
        if state is not None and state.is_finished():
            tracker.close_dead_run(run_id, f"trial {number} ended {state.name} while its run was open")


def _readable(value: object) -> object:
    return "exact" if value is None else value


class TrialEvaluation:
    """The objective of a study: ``evaluation(trial)`` returns the trial's objective values."""

    def __init__(
        self,
        study: optuna.Study,
        space: BoundSpace,
        candidates: CandidateEvaluator,
        settings: StudySettings,
        policy: TrialPolicy,
        tracker: Tracker,
        retraining: SearchRetraining | None = None,
        screening: ScreeningRule | None = None,
    ) -> None:
        self.study, self.space, self.candidates, self.settings = study, space, candidates, settings
        self.policy, self.tracker, self.retraining, self.screening = policy, tracker, retraining, screening
        self.current: optuna.Trial | None = None  # the trial this worker is running
        self.last_error: tuple[int, Exception] | None = None  # the last trial that raised, and what
        self._baseline_accuracy: float | None = None
        self._commit = git_commit()  # the code this worker loaded: recorded on each trial it runs

    def baseline_accuracy(self) -> float:
        """Accuracy of the all-exact model: from the baseline trial, else measured once."""
        if self._baseline_accuracy is None:
            for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                if t.user_attrs.get(KEY_ATTR) == BASELINE_KEY:
                    self._baseline_accuracy = float(t.user_attrs["accuracy"])
                    break
            else:
                self._baseline_accuracy = self.candidates.evaluate({}, timing=False).metrics["accuracy"]
        return self._baseline_accuracy

    def __call__(self, trial: optuna.Trial) -> list[float]:
        try:
            return self._run(trial)
        except Exception as exc:  # a failed trial: the runner names the error if failures go on
            self.last_error = (trial.number, exc)
            raise

    def _run(self, trial: optuna.Trial) -> list[float]:
        self.current = trial
        params = self.space.suggest(trial)
        assignment = self.space.assignment(params)
        key = assignment_key(assignment)
        self._record_worker(trial, key)
        close_dead_runs(self.study, self.tracker)  # Optuna has just failed dead workers' trials: close their runs
        self.policy.prune_if_duplicate(trial, key)
        self.policy.claim_budget_slot(trial)
        knobs = self.space.knob_fields  # only what this space searches, per layer
        layer_params = {f"layer.{n}.{k}": _readable(getattr(cfg, k)) for n, cfg in assignment.items() for k in knobs}
        run_id = self.tracker.start_trial(trial, {**params, **layer_params}, tags=self._link_retry(trial))
        try:
            result, judged = self._evaluate(trial, params, assignment, key, run_id)
        except optuna.TrialPruned:
            raise  # screened out: its run is already closed
        except BaseException as exc:
            self.tracker.end_run(run_id, status="KILLED" if isinstance(exc, Interrupted) else "FAILED")
            raise
        try:  # another worker took it while this one evaluated: the same result is that trial's run
            self.policy.prune_if_duplicate(trial, key, when=", evaluated at the same time")
        except optuna.TrialPruned:
            self.tracker.delete_run(run_id)
            raise
        finite = {k: v for k, v in result.metrics.items() if math.isfinite(v)}
        self.tracker.end_trial(run_id, finite, tables={"layers.csv": result.layers})
        return [judged if o.name == RETRAINED else result.metrics[o.name] for o in self.settings.objectives]

    def _record_worker(self, trial: optuna.Trial, key: str) -> None:
        trial.set_user_attr(KEY_ATTR, key)
        trial.set_user_attr("worker", worker_name())
        trial.set_user_attr("torch_threads", torch.get_num_threads())  # from its allocation (dse.worker.process)
        if self._commit is not None:
            trial.set_user_attr("code_commit", self._commit)
        if scheduler_job():
            trial.set_user_attr("scheduler_job", scheduler_job())

    def _evaluate(
        self, trial: optuna.Trial, params: dict[str, Any], assignment: Assignment, key: str, run_id: str
    ) -> tuple[CandidateResult, float]:
        """The candidate's metrics (kept as user attributes) and the accuracy its objectives judge."""
        partial = self._screen(trial, assignment, run_id) if self.screening and key != BASELINE_KEY else None
        timing = self.settings.measure_time
        result = (
            self.candidates.evaluate(assignment, timing=timing, deployed=self.settings.deploys)
            if partial is None
            else self.candidates.evaluate(assignment, timing=timing, partial=partial, deployed=self.settings.deploys)
        )
        metrics = result.metrics
        retraining = self.retraining if key != BASELINE_KEY else None  # the exact model: nothing to retrain
        if retraining is not None and retraining.wants(metrics, self.baseline_accuracy()):
            metrics[RETRAINED] = retraining.retrain_trial(trial, params, metrics)
        # the accuracy the objectives judge: after retraining if that is an objective (else before);
        # a trial not retrained (the exact model, or beyond retrain.max_drop_before) keeps its own
        judges_retrained = any(o.name == RETRAINED for o in self.settings.objectives)
        judged = metrics.get(RETRAINED, metrics["accuracy"]) if judges_retrained else metrics["accuracy"]
        if self.settings.max_accuracy_drop is not None:
            drop = self.baseline_accuracy() - judged
            metrics["accuracy_drop"] = drop
            trial.set_constraint("accuracy_drop", drop - self.settings.max_accuracy_drop)
        for bound in self.settings.constraints:
            for name, violation in bound.violations(float(metrics[bound.metric])).items():
                trial.set_constraint(name, violation)
        for name, value in metrics.items():
            trial.set_user_attr(name, value)
        if self.candidates.reference_time_s is not None and TIME_REFERENCE_ATTR not in self.study.user_attrs:
            self.study.set_user_attr(TIME_REFERENCE_ATTR, self.candidates.reference_time_s)
        # the per-layer cost table in brief, for viewers of the study alone (optuna-dashboard)
        by_kind = result.layers.groupby("kind")["total_pj"].sum() / 1e6
        trial.set_user_attr("energy_uj_by_layer_kind", {k: round(float(v), 4) for k, v in by_kind.items()})
        return result, judged

    def _link_retry(self, trial: optuna.Trial) -> dict[str, str]:
        """If ``trial`` re-runs a failed one: tag that trial's run ``dse_retried_by``, and return the tag
        its own run gets at creation (``dse_retry_of``). In this order, a kill in between leaves no run
        that claims a link the other side lacks."""
        failed = retried_trial(stored_trial(self.study, trial))
        if failed is None:
            return {}
        trial.set_user_attr("retry_of", failed)
        original = next(
            (t.user_attrs.get("mlflow_run_id") for t in self.study.get_trials(deepcopy=False) if t.number == failed),
            None,
        )
        if original:
            self.tracker.set_tag(original, "dse_retried_by", str(trial.number))
        return {"dse_retry_of": str(failed)}

    def _screen(self, trial: optuna.Trial, assignment: Assignment, run_id: str) -> PartialEvaluation:
        """Raise TrialPruned (recorded with its partial accuracy, bound and reason) if the first images
        show the candidate cannot reach the current front."""
        assert self.screening is not None
        if self.settings.max_accuracy_drop is not None and self.screening.min_accuracy is None:
            limit = self.baseline_accuracy() - self.settings.max_accuracy_drop  # an infeasible trial: never on it
            self.screening = dataclasses.replace(self.screening, min_accuracy=limit)
        costs = self.candidates.costs(self.candidates.cost_table(self.candidates.model, assignment))
        outside = self._outside_cost_bounds(costs)
        if outside:  # infeasible whatever its accuracy: never on the front, so no image is spent on it
            for name, value in {**costs, SCREENED_ATTR: outside, "screening_images": 0}.items():
                trial.set_user_attr(name, value)
            self.tracker.set_tag(run_id, "dse_pruned", "screening")
            self.tracker.end_trial(run_id, {k: v for k, v in costs.items() if math.isfinite(v)})
            raise optuna.TrialPruned(f"screened out before any image: {outside}")
        front = [list(t.values) for t in self.study.best_trials]
        partial = self.candidates.first_images(assignment, self.screening.first_images)
        n = self.candidates.evaluator.n_images
        decision = self.screening.decide(int(partial.top1.sum()), len(partial.top1), n, costs, front)
        trial.set_user_attr("screening_partial_accuracy", decision.partial_accuracy)
        trial.set_user_attr("screening_upper_bound", decision.upper_bound)
        trial.set_user_attr("screening_images", decision.images_seen)
        if not decision.prune:
            return partial
        trial.set_user_attr(SCREENED_ATTR, decision.reason)
        self.tracker.set_tag(run_id, "dse_pruned", "screening")
        self.tracker.end_trial(
            run_id, {"partial_accuracy": decision.partial_accuracy, "accuracy_upper_bound": decision.upper_bound}
        )
        raise optuna.TrialPruned(f"screened out after {decision.images_seen} images: {decision.reason}")

    def _outside_cost_bounds(self, costs: dict[str, float]) -> str:
        """Which ``study.constraints`` on costs (known before any image) the assignment breaks; "" if none."""
        # a bound on accuracy is known only after evaluation: only the cost model's metrics are checked here
        known = [(bound, costs[bound.metric]) for bound in self.settings.constraints if bound.metric in costs]
        return "; ".join(said for bound, value in known for said in bound.broken(value))
