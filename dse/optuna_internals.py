"""Every use of Optuna's private API in dse, in one place.

Optuna's public API has no way to ask a storage which trials are stale, to plug a lock into
the journal file backend, to compute a hypervolume, or to read the stored state of a running
:class:`optuna.Trial`. dse needs all four, so this module reaches into Optuna for them and
nothing else in dse does (``tests/test_import_boundaries.py`` checks it). The ``optuna``
pin in ``pyproject.toml`` is the range the tests run on: an upgrade that moves one of these
names fails here, at import, with the name.

Constraints are read through the public :attr:`optuna.trial.FrozenTrial.constraints`
(Optuna 5 stores each as a system attribute ``constraints:<name>``; do not read those keys).
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Sequence
from datetime import datetime
from types import FrameType

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages._rdb import models
from optuna.storages.journal._file import BaseJournalFileLock
from optuna.study import _optimize, _tell
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import orm

__all__ = [
    "BaseHeartbeat",
    "HeartbeatJournalStorage",
    "JournalFileLock",
    "RDBStorageWithStaleHook",
    "is_feasible",
    "storage_of",
    "stored_trial",
    "trial_bookkeeping_frame",
    "trial_id",
    "wfg_hypervolume",
]

# The interface JournalFileBackend calls for its lock (not exported by Optuna).
JournalFileLock = BaseJournalFileLock


# optuna.study._optimize._run_trial tells the study a trial's result inside a try whose finally reads a variable
# the try sets: a BaseException raised there (dse's Interrupted) is masked by an UnboundLocalError.
_RUN_TRIAL, _TELL = _optimize._run_trial.__code__, _tell._tell_with_warning.__code__
_source, _first = inspect.getsourcelines(_optimize._run_trial)
_TELL_LINE = _first + next(i for i, line in enumerate(_source) if "_tell_with_warning(" in line)


def trial_bookkeeping_frame(frame: FrameType | None) -> FrameType | None:
    """Optuna's ``_run_trial`` frame when ``frame`` runs in its bookkeeping after the objective (telling the
    study, logging the trial), else None: a signal landing there must wait until that frame returns."""
    inner = None
    while frame is not None:
        if frame.f_code is _RUN_TRIAL:
            in_tell = inner is not None and inner.f_code is _TELL
            after_objective = inner is None and (frame.f_lineno or 0) >= _TELL_LINE - 1  # the try: line and on
            return frame if in_tell or after_objective else None
        inner, frame = frame, frame.f_back
    return None


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether ``trial`` met every constraint it set (``trial.set_constraint``; none set: feasible),
    as Optuna judges it for ``study.best_trials``."""
    return all(value <= 0.0 for value in trial.constraints.values())


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage ``study`` reads and writes (Optuna keeps it private)."""
    return study._storage


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (unique across studies; ``trial.number`` is per study)."""
    return trial._trial_id


def stored_trial(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """The stored state of a running ``trial`` (its system attributes, its state if another worker ended it)."""
    return storage_of(study).get_trial(trial_id(trial))


def wfg_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Optuna's hypervolume (the WFG algorithm its samplers and plots use) of ``points`` (minimisation),
    each of which must dominate ``reference``."""
    return float(compute_hypervolume(points, reference, assume_pareto=False))


class RDBStorageWithStaleHook(RDBStorage):
    """An RDB storage whose stale trials (failed by ``optuna.storages.fail_stale_trials``) are those of
    Optuna's heartbeat plus :meth:`extra_stale_trial_ids`."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        return stale + [i for i in self.extra_stale_trial_ids(study_id) if i not in stale]

    def extra_stale_trial_ids(self, study_id: int) -> list[int]:
        """Trial ids to fail besides those whose heartbeat is stale (default: none)."""
        return []

    def running_without_heartbeat(self, study_id: int) -> list[tuple[int, datetime | None]]:
        """(trial id, start) of the study's RUNNING trials that never recorded a heartbeat."""
        session = self.scoped_session()
        try:
            running = (
                session.query(models.TrialModel)
                .options(orm.selectinload(models.TrialModel.heartbeats))
                .filter(models.TrialModel.study_id == study_id, models.TrialModel.state == TrialState.RUNNING)
                .all()
            )
            return [(int(t.trial_id), t.datetime_start) for t in running if not t.heartbeats]
        finally:
            session.close()


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat, metaclass=abc.ABCMeta):
    """A journal storage that takes part in Optuna's heartbeat protocol: Optuna's heartbeat thread
    calls ``record_heartbeat``, and ``fail_stale_trials`` fails the ids :meth:`stale_trial_ids` names."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trial_ids(study_id)

    @abc.abstractmethod
    def stale_trial_ids(self, study_id: int) -> list[int]:
        """Ids of the study's RUNNING trials whose worker is gone."""

    def running_trials(self, study_id: int) -> Sequence[FrozenTrial]:
        return self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
