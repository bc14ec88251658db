"""The trial loop: budget, baseline, duplicates, constraints, progress and tracking.

``n_trials`` is the study's target number of COMPLETE trials, not a per-run
increment: re-running the same command after a crash finishes the budget and
does nothing more. Each distinct assignment is evaluated once; a trial that
proposes one already done (or running in another worker) is PRUNED with the
attribute ``duplicate_of`` and does not count. The all-exact baseline is
enqueued once, so it is trial 0 of a new study.

A RUNNING trial counts as "being evaluated" only on storages with a heartbeat
(Optuna fails dead workers' trials before each new trial there), and never for
its own retry: a dead trial must not block the retry of its assignment.

With several workers the budget stays exact: a trial starts evaluating only while
the COMPLETE trials plus the RUNNING trials numbered before it are fewer than the
budget, else it waits for them (a dead worker's trial is failed after the grace
period, and its slot freed). A failed trial's MLflow run is closed as KILLED by the
next trial of any worker, and its retry's run names it (``dse_retry_of``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.exceptions import ExperimentalWarning
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from dse.assignment import BASELINE_KEY, assignment_key
from dse.candidate import CandidateEvaluator, PartialEvaluation
from dse.exceptions import ConfigError
from dse.interrupt import Interrupted
from dse.search_spaces import BoundSpace
from dse.study.objectives import MEASURED_TIME_METRICS, Objective
from dse.study.retraining import RETRAINED, SearchRetraining
from dse.study.screening import ScreeningRule
from dse.study.storage import RetryDeadTrial, retried_trial
from dse.tracking.heatmap import plot_front_heatmap
from dse.tracking.mlflow_tracker import MlflowTracker
from dse.tracking.pareto import front_hypervolume, front_table
from dse.workers import scheduler_job, worker_name

__all__ = ["BASELINE_KEY", "StudyRunner", "StudySettings"]

_logger = logging.getLogger(__name__)
_KEY_ATTR = "assignment_key"
_REFERENCE_ATTR = "hypervolume_reference"
_SCREENED_ATTR = "screening_reason"  # a trial stopped by screening: its assignment counts as evaluated
_TIME_REFERENCE_ATTR = "reference_time_s"  # the exact model's pass time that measured ratios scale
_BUDGET_POLL_S = 2.0  # how often a trial waiting for a budget slot looks again


@dataclass(frozen=True)
class StudySettings:
    """What the loop needs besides the study itself.

    Attributes:
        n_trials: target number of COMPLETE trials for the whole study (>= 1).
        objectives: optimised metrics, in the study's direction order.
        max_accuracy_drop: feasibility constraint (fraction in [0, 1], e.g. 0.01), or None.
        max_duplicate_streak: stop after this many duplicate proposals in a row.
        max_failure_streak: stop after this many failed trials in a row (a broken setup, not bad luck).
        timing: measure inference time (needed if it is an objective).
        seed_uniform: start with the uniform assignments (every parameter at one choice, for each choice).
    """

    n_trials: int
    objectives: Sequence[Objective]
    max_accuracy_drop: float | None = None
    max_duplicate_streak: int = 50
    max_failure_streak: int = 5
    timing: bool = True
    seed_uniform: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.n_trials, bool) or not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise ConfigError(
                f"study.n_trials={self.n_trials!r}: the budget is the number of COMPLETE trials the study should "
                "hold, a whole number >= 1 (e.g. study.n_trials=20)."
            )
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ConfigError(
                f"study.max_accuracy_drop={self.max_accuracy_drop!r} is a fraction of accuracy in [0, 1] "
                "(0.05 = 5 points), or null for no constraint."
            )
        for name in ("max_duplicate_streak", "max_failure_streak"):
            if getattr(self, name) < 1:
                raise ConfigError(f"study.{name}={getattr(self, name)!r} must be >= 1.")
        if not self.timing and any(o.name in MEASURED_TIME_METRICS for o in self.objectives):
            raise ConfigError(
                "study.measure_time=false, but an objective is a measured time; enable it or drop that objective."
            )


def _readable(value: object) -> object:
    return "exact" if value is None else value


def count_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


class StudyRunner:
    """Run ``study`` until it holds ``settings.n_trials`` COMPLETE trials."""

    def __init__(
        self,
        study: optuna.Study,
        space: BoundSpace,
        candidates: CandidateEvaluator,
        settings: StudySettings,
        tracker: MlflowTracker | None = None,
        running_is_live: bool = True,
        retraining: SearchRetraining | None = None,
        screening: ScreeningRule | None = None,
    ) -> None:
        """``running_is_live``: the storage fails dead workers' trials (a heartbeat), so a
        RUNNING trial is really being evaluated; without one it proves nothing.
        ``retraining``: retrain each trial as it completes (``retrain.on=each``)."""
        self.retraining = retraining
        self.screening = screening  # dse.study.screening: stop hopeless trials after their first images
        self.study = study
        self.running_is_live = running_is_live
        self.space = space
        self.candidates = candidates
        self.settings = settings
        self.tracker = tracker
        self._duplicate_streak = 0
        self._failure_streak = 0
        self._baseline_accuracy: float | None = None
        self._progress: tqdm | None = None
        self._last_logged_step: int | None = None
        self._current: optuna.Trial | None = None  # the trial this worker is running
        self.interrupted_trial: int | None = None  # set when a signal stopped one

    # -- the loop -------------------------------------------------------------------
    def run(self) -> int:
        """Evaluate trials until the budget is complete; return the number of COMPLETE trials."""
        budget = self.settings.n_trials
        if budget > self.space.size:
            _logger.warning(
                "n_trials=%d exceeds the %d distinct assignments of this space; capping.", budget, self.space.size
            )
            budget = self.space.size
        self._budget = budget
        self.study.set_user_attr("n_trials", budget)  # the budget, for the summary on the parent run
        reference = self.study.user_attrs.get(_TIME_REFERENCE_ATTR)
        if reference is not None:  # every worker and resume scales measured times by the same exact-model time
            self.candidates.reference_time_s = float(reference)
        self.study.enqueue_trial(self.space.baseline_params(), skip_if_exists=True)
        if self.settings.seed_uniform:  # then every "all layers at one choice" assignment
            for params in self.space.uniform_params():
                self.study.enqueue_trial(params, skip_if_exists=True)
        done = count_complete(self.study)
        if done >= budget:
            self._last_logged_step = done  # its points were logged when those trials completed
            _logger.info(
                "Study %r already holds %d/%d complete trials: nothing to do.", self.study.study_name, done, budget
            )
            return done
        self._progress = tqdm(total=budget, initial=done, desc=self.study.study_name, unit="trial")
        try:
            self.study.optimize(self._objective, callbacks=[self._after_trial], catch=(RuntimeError,))
        except Interrupted as exc:
            self._record_interrupted(exc)
            raise
        finally:
            self._progress.close()
        self._settle()
        return count_complete(self.study)

    def _record_interrupted(self, exc: Interrupted) -> None:
        """The trial a signal stopped: FAIL, tagged ``interrupted``, its parameters queued again."""
        trial = self._current
        if trial is None:
            return
        frozen = self.study._storage.get_trial(trial._trial_id)
        if frozen.state != TrialState.RUNNING:
            return  # it had finished: nothing was lost
        trial.set_user_attr("interrupted", str(exc))
        self.study.tell(trial, state=TrialState.FAIL)
        storage = self.study._storage
        retry = storage.get_heartbeat_stale_trial_callback() if isinstance(storage, BaseHeartbeat) else None
        (retry or RetryDeadTrial())(self.study, self.study._storage.get_trial(trial._trial_id))
        self.interrupted_trial = trial.number

    def _settle(self) -> None:
        """Once the budget is complete, wait for other workers' RUNNING trials to end, failing those of
        dead workers when their heartbeat goes stale, so the study holds no trial left RUNNING forever."""
        storage = self.study._storage
        if not self.running_is_live or not isinstance(storage, BaseHeartbeat):
            return
        interval = storage.get_heartbeat_interval() or 0
        deadline = time.monotonic() + 3 * interval + float(getattr(storage, "grace_period", None) or 0) + 5
        while self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) and time.monotonic() < deadline:
            self._fail_stale_trials()
            time.sleep(min(_BUDGET_POLL_S, interval or _BUDGET_POLL_S))
        self._close_dead_runs()

    def _duplicate_of(self, key: str, number: int) -> int | None:
        """The trial that evaluated (or is evaluating) the assignment ``key`` before trial ``number``.

        FAIL trials and PRUNED duplicates never count (a trial stopped by screening does: its assignment
        was evaluated); a RUNNING one counts only if it is live
        (``running_is_live``), started earlier, and is not a trial this one retries.
        """
        trials = self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)
        )
        me = next((t for t in trials if t.number == number), None)
        retried = set(me.system_attrs.get("retry_history", [])) if me is not None else set()
        for t in trials:
            if t.number == number or t.number in retried or t.user_attrs.get(_KEY_ATTR) != key:
                continue
            if t.state == TrialState.PRUNED and _SCREENED_ATTR not in t.user_attrs:
                continue  # a duplicate: the evaluation is another trial's
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (self.running_is_live and t.number < number):
                return t.number
        return None

    def baseline_accuracy(self) -> float:
        """Accuracy of the all-exact model: from the baseline trial, else measured once."""
        if self._baseline_accuracy is None:
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if t.user_attrs.get(_KEY_ATTR) == BASELINE_KEY:
                    self._baseline_accuracy = float(t.user_attrs["accuracy"])
                    break
            else:
                self._baseline_accuracy = self.candidates.evaluate({}, timing=False).metrics["accuracy"]
        return self._baseline_accuracy

    def _objective(self, trial: optuna.Trial) -> list[float]:
        self._current = trial
        params = self.space.suggest(trial)
        assignment = self.space.assignment(params)
        key = assignment_key(assignment)
        trial.set_user_attr(_KEY_ATTR, key)
        trial.set_user_attr("worker", worker_name())
        trial.set_user_attr("torch_threads", torch.get_num_threads())  # from its allocation (dse.workers)
        if scheduler_job():
            trial.set_user_attr("scheduler_job", scheduler_job())
        self._close_dead_runs()  # Optuna has just failed dead workers' trials: close their runs too
        duplicate = self._duplicate_of(key, trial.number)
        if duplicate is not None:
            trial.set_user_attr("duplicate_of", duplicate)
            raise optuna.TrialPruned(f"same assignment as trial {duplicate}")
        self._claim_budget_slot(trial)
        run_id = None
        if self.tracker is not None:
            knobs = self.space.knob_fields  # only what this space searches, per layer
            layer_params = {
                f"layer.{n}.{k}": _readable(getattr(cfg, k)) for n, cfg in assignment.items() for k in knobs
            }
            run_id = self.tracker.start_trial(trial, {**params, **layer_params}, tags=self._link_retry(trial))
        try:
            partial = self._screen(trial, assignment, run_id) if self.screening and key != BASELINE_KEY else None
            timing = self.settings.timing
            result = (
                self.candidates.evaluate(assignment, timing=timing, partial=partial)
                if partial is not None
                else self.candidates.evaluate(assignment, timing=timing)
            )
            metrics = result.metrics
            retraining = self.retraining if key != BASELINE_KEY else None  # the exact model: nothing to retrain
            if retraining is not None and retraining.wants(metrics, self.baseline_accuracy()):
                metrics[RETRAINED] = retraining.retrain_trial(trial, params, metrics)
            # the accuracy the objectives judge: after retraining if that is an objective (else before);
            # a trial not retrained (the exact model, or beyond retrain.max_drop_before) keeps its own
            judged = metrics.get(RETRAINED, metrics["accuracy"]) if self._judges_retrained else metrics["accuracy"]
            if self.settings.max_accuracy_drop is not None:
                drop = self.baseline_accuracy() - judged
                metrics["accuracy_drop"] = drop
                trial.set_constraint("accuracy_drop", drop - self.settings.max_accuracy_drop)
            for name, value in metrics.items():
                trial.set_user_attr(name, value)
            if self.candidates.reference_time_s is not None and _TIME_REFERENCE_ATTR not in self.study.user_attrs:
                self.study.set_user_attr(_TIME_REFERENCE_ATTR, self.candidates.reference_time_s)
            # the per-layer cost table in brief, for viewers of the study alone (optuna-dashboard)
            by_kind = result.layers.groupby("kind")["total_pj"].sum() / 1e6
            trial.set_user_attr("energy_uj_by_layer_kind", {k: round(float(v), 4) for k, v in by_kind.items()})
        except optuna.TrialPruned:
            raise  # screened out: its run is already closed
        except BaseException as exc:
            if self.tracker is not None and run_id is not None:
                status = "KILLED" if isinstance(exc, Interrupted) else "FAILED"
                self.tracker.client.set_terminated(run_id, status=status)
            raise
        duplicate = self._duplicate_of(key, trial.number)  # another worker took it while this one evaluated
        if duplicate is not None:
            trial.set_user_attr("duplicate_of", duplicate)
            if self.tracker is not None and run_id is not None:
                self.tracker.client.delete_run(run_id)  # the same result is another trial's run
            raise optuna.TrialPruned(f"same assignment as trial {duplicate}, evaluated at the same time")
        if self.tracker is not None and run_id is not None:
            finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
            self.tracker.end_trial(run_id, finite, tables={"layers.csv": result.layers})
        return [judged if o.name == RETRAINED else metrics[o.name] for o in self.settings.objectives]

    def _claim_budget_slot(self, trial: optuna.Trial) -> None:
        """Return once ``trial`` may evaluate without overshooting the budget; PRUNE it (``budget_reached``)
        when other workers' trials complete the budget first.

        The trials ahead are the RUNNING ones numbered before this one (a live heartbeat says they are
        being evaluated), except those this trial re-runs; a trial never waits for a later one, so the
        earliest always proceeds. A dead worker's trial stops blocking when its heartbeat goes stale
        (failed here, retried later).
        """
        retried = set(self.study._storage.get_trial(trial._trial_id).system_attrs.get("retry_history", []))
        waited = False
        while True:
            trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
            complete = sum(t.state == TrialState.COMPLETE for t in trials)
            if complete >= self._budget:
                trial.set_user_attr("budget_reached", True)
                raise optuna.TrialPruned(f"the budget of {self._budget} complete trials was reached by other workers")
            if not self.running_is_live:
                return
            ahead = sum(
                t.state == TrialState.RUNNING and t.number < trial.number and t.number not in retried for t in trials
            )
            if complete + ahead < self._budget:
                return
            if not waited:
                _logger.info(
                    "Trial %d waits: %d complete + %d running elsewhere fill the budget of %d.",
                    trial.number,
                    complete,
                    ahead,
                    self._budget,
                )
                waited = True
            time.sleep(_BUDGET_POLL_S)
            self._fail_stale_trials()

    def _fail_stale_trials(self) -> None:
        """FAIL (and so retry) RUNNING trials whose worker's heartbeat is stale: a dead worker's."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # the API is stable in use, marked experimental
            optuna.storages.fail_stale_trials(self.study)

    def _close_dead_runs(self) -> None:
        """KILLED for every RUNNING trial run whose trial has ended (a dead worker's, failed by the heartbeat)."""
        if self.tracker is None or self.tracker.parent_run_id is None:
            return
        running = self.tracker.running_trial_runs()
        if not running:
            return
        states = {t.number: t.state for t in self.study.get_trials(deepcopy=False)}  # read after the runs
        for run_id, number in running.items():
            state = states.get(number)
            if state is not None and state.is_finished():
                self.tracker.close_dead_run(run_id, f"trial {number} ended {state.name} while its run was open")

    def _link_retry(self, trial: optuna.Trial) -> dict[str, str]:
        """If ``trial`` re-runs a failed one: tag that trial's run ``dse_retried_by``, and return the tag
        its own run gets at creation (``dse_retry_of``). In this order, a kill in between leaves no run
        that claims a link the other side lacks."""
        assert self.tracker is not None
        failed = retried_trial(self.study._storage.get_trial(trial._trial_id))
        if failed is None:
            return {}
        trial.set_user_attr("retry_of", failed)
        original = next(
            (t.user_attrs.get("mlflow_run_id") for t in self.study.get_trials(deepcopy=False) if t.number == failed),
            None,
        )
        if original:
            self.tracker.client.set_tag(original, "dse_retried_by", str(trial.number))
        return {"dse_retry_of": str(failed)}

    def _screen(self, trial: optuna.Trial, assignment: dict, run_id: str | None) -> PartialEvaluation:
        """Raise TrialPruned (recorded with its partial accuracy, bound and reason) if the first images
        show the candidate cannot reach the current front."""
        assert self.screening is not None
        if self.settings.max_accuracy_drop is not None and self.screening.min_accuracy is None:
            limit = self.baseline_accuracy() - self.settings.max_accuracy_drop  # an infeasible trial: never on it
            self.screening = dataclasses.replace(self.screening, min_accuracy=limit)
        front = [list(t.values) for t in self.study.best_trials]
        decision, partial = self.candidates.screen(assignment, self.screening, front)
        trial.set_user_attr("screening_partial_accuracy", decision.partial_accuracy)
        trial.set_user_attr("screening_upper_bound", decision.upper_bound)
        trial.set_user_attr("screening_images", decision.images_seen)
        if not decision.prune:
            return partial
        trial.set_user_attr(_SCREENED_ATTR, decision.reason)
        if self.tracker is not None and run_id is not None:
            self.tracker.client.set_tag(run_id, "dse_pruned", "screening")
            self.tracker.end_trial(
                run_id,
                {"partial_accuracy": decision.partial_accuracy, "accuracy_upper_bound": decision.upper_bound},
            )
        raise optuna.TrialPruned(f"screened out after {decision.images_seen} images: {decision.reason}")

    @property
    def _judges_retrained(self) -> bool:
        return any(o.name == RETRAINED for o in self.settings.objectives)

    # -- after each trial -------------------------------------------------------------
    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.PRUNED and "duplicate_of" in trial.user_attrs:
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
            if self._failure_streak >= self.settings.max_failure_streak:
                _logger.error(
                    "%d trials failed in a row; stopping. The study keeps every finished trial.", self._failure_streak
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
        if done >= self._budget:
            study.stop()

    def reference_point(self) -> list[float] | None:
        """Hypervolume reference: 0 for maximised metrics, 1.1 x baseline for minimised ones (fixed once)."""
        stored = self.study.user_attrs.get(_REFERENCE_ATTR)
        if stored is not None:
            return list(stored)
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get(_KEY_ATTR) == BASELINE_KEY and t.values is not None:
                ref = [
                    0.0 if o.direction == "maximize" else 1.1 * v
                    for o, v in zip(self.settings.objectives, t.values, strict=False)
                ]
                self.study.set_user_attr(_REFERENCE_ATTR, ref)
                return ref
        return None

    def current_hypervolume(self) -> float | None:
        return front_hypervolume(self.study, self.settings.objectives, self.reference_point())

    def publish(self, done: int, final: bool = False) -> None:
        """Refresh progress and the MLflow front (plots every ``plot_every`` trials and at the end)."""
        hv = self.current_hypervolume()
        front_size = len(self.study.best_trials)
        if self._progress is not None:
            self._progress.set_postfix(front=front_size, hv=f"{hv:.4f}" if hv is not None else "-")
        if self.tracker is not None:
            plots = final or done % self.tracker.plot_every == 0 or done >= self._budget
            fresh = done != self._last_logged_step  # the final refresh after the last trial adds no point
            self.tracker.log_front(self.study, self.settings.objectives, hv, done, plots=plots, metrics=fresh)
            self._last_logged_step = done
            if plots and self.tracker.parent_run_id is not None and self.study.best_trials:
                self.tracker.log_table(self.tracker.parent_run_id, self.front_layers(), "pareto_layers.csv", "pareto")
                with tempfile.TemporaryDirectory() as tmp:
                    heatmap = plot_front_heatmap(
                        front_table(self.study, self.settings.objectives), Path(tmp) / "pareto_assignments.png"
                    )
                    if heatmap is not None:
                        self.tracker.client.log_artifact(self.tracker.parent_run_id, str(heatmap), "pareto")

    def front_layers(self) -> pd.DataFrame:
        """Per-layer cost breakdown (energy, latency, widths) of every Pareto trial, from the cost models alone."""
        tables = []
        for t in self.study.best_trials:
            table = self.candidates.cost_table(self.candidates.model, self.space.assignment(t.params))
            table.insert(0, "trial", t.number)
            tables.append(table)
        return pd.concat(tables, ignore_index=True)
