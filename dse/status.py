"""``python -m dse.status study=<name> [storage=...] [--json]``: how far a study is, and who works on it.

Reads the study's storage only (never MLflow, never a model), so it is quick and safe to run
beside a search, from a login node or a cron job. The same overrides as ``dse.search``
pick the study and its storage. Plain text for people, ``--json`` for scripts.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import optuna
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from optuna.trial import FrozenTrial, TrialState

from dse.cli import dse_error_of
from dse.config_paths import CONFIG_DIR
from dse.exceptions import ConfigError, DSEError
from dse.objectives import Objective
from dse.store_urls import SQLITE_PREFIX
from dse.study.create import load_studies
from dse.study.front_publication import hypervolume_reference
from dse.study.storage import describe_storage
from dse.tracking.pareto import front_hypervolume

__all__ = ["StudyStatus", "WorkerStatus", "format_status", "main", "study_status"]

_logger = logging.getLogger(__name__)
_RECENT = 10  # completions the finishing-time estimate is based on


@dataclass
class WorkerStatus:
    worker: str  # host:pid
    scheduler_job: str | None
    trials: int  # trials it started (any state)
    complete: int
    last_report: str  # ISO time of its latest trial start or end
    running_trial: int | None


@dataclass
class StudyStatus:
    study: str
    storage: str
    states: dict[str, int]
    complete: int
    budget: int | None
    front_size: int
    hypervolume: float | None
    retried: int  # trials that are the retry of a failed (dead worker's or interrupted) trial
    failed: int
    duplicates: int  # proposals pruned because another trial had that assignment
    screened: int  # stopped early by screening
    trials_per_hour: float | None  # at the recent rate
    eta_s: float | None  # to finish the budget at that rate
    workers: list[WorkerStatus] = field(default_factory=list)


def _last_report(t: FrozenTrial) -> datetime | None:
    return t.datetime_complete or t.datetime_start


def study_status(study: optuna.Study, storage_name: str, budget: int | None = None) -> StudyStatus:
    """The state of ``study``; ``budget`` (the config's ``study.n_trials``) if the study does not hold one."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    budget = study.user_attrs.get("n_trials", budget)
    names = study.user_attrs.get("objectives") or study.metric_names or []
    objectives = [
        Objective(n, "maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize")
        for n, d in zip(names, study.directions, strict=False)
    ]
    front = study.best_trials if complete else []
    hv = front_hypervolume(study, objectives, hypervolume_reference(study, objectives)) if objectives else None
    finished = sorted(t.datetime_complete for t in complete if t.datetime_complete)[-_RECENT:]
    rate = None
    if len(finished) >= 2 and finished[-1] > finished[0]:
        rate = 3600.0 * (len(finished) - 1) / (finished[-1] - finished[0]).total_seconds()
    eta = None
    if rate and budget is not None:
        eta = max(0, budget - len(complete)) * 3600.0 / rate
    workers: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        if "worker" in t.user_attrs:
            workers.setdefault(str(t.user_attrs["worker"]), []).append(t)
    seen = []
    for name, own in workers.items():
        last = max((d for d in map(_last_report, own) if d is not None), default=None)
        running = [t.number for t in own if t.state == TrialState.RUNNING]
        jobs = [t.user_attrs["scheduler_job"] for t in own if "scheduler_job" in t.user_attrs]
        seen.append(
            WorkerStatus(
                worker=name,
                scheduler_job=jobs[-1] if jobs else None,
                trials=len(own),
                complete=sum(t.state == TrialState.COMPLETE for t in own),
                last_report=last.isoformat(timespec="seconds") if last else "",
                running_trial=running[-1] if running else None,
            )
        )
    seen.sort(key=lambda w: w.last_report, reverse=True)
    return StudyStatus(
        study=study.study_name,
        storage=storage_name,
        states=dict(sorted(states.items())),
        complete=len(complete),
        budget=budget,
        front_size=len(front),
        hypervolume=hv,
        retried=sum("failed_trial" in t.system_attrs for t in trials),
        failed=states.get("FAIL", 0),
        duplicates=sum("duplicate_of" in t.user_attrs for t in trials),
        screened=sum("screening_reason" in t.user_attrs for t in trials),
        trials_per_hour=rate,
        eta_s=eta,
        workers=seen,
    )


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def format_status(status: StudyStatus, now: datetime | None = None) -> str:
    """``status`` as a few lines of text."""
    now = now or datetime.now()
    budget = status.budget if status.budget is not None else "?"
    lines = [
        f"Study {status.study!r} in {status.storage}",
        f"  complete: {status.complete}/{budget}   trials by state: "
        + ", ".join(f"{k} {v}" for k, v in status.states.items()),
        f"  Pareto front: {status.front_size} trials, hypervolume "
        + (f"{status.hypervolume:.4f}" if status.hypervolume is not None else "-"),
        f"  failed {status.failed} (retried {status.retried}), duplicates pruned {status.duplicates}, "
        f"screened out {status.screened}",
    ]
    if status.budget is not None and status.complete >= status.budget:
        lines.append("  finished: the budget is complete")
    elif status.trials_per_hour:
        lines.append(
            f"  rate {status.trials_per_hour:.1f} complete trials/hour (last {_RECENT}); "
            f"about {_duration(status.eta_s or 0)} to finish the budget"
        )
    else:
        lines.append("  rate: not yet known (fewer than two complete trials)")
    lines.append(f"  workers seen: {len(status.workers)}")
    for w in status.workers:
        ago = _duration((now - datetime.fromisoformat(w.last_report)).total_seconds()) if w.last_report else "-"
        doing = f"running trial {w.running_trial}" if w.running_trial is not None else "idle or gone"
        job = f" (SLURM job {w.scheduler_job})" if w.scheduler_job else ""
        lines.append(f"    {w.worker}{job}: {w.complete}/{w.trials} trials complete, last report {ago} ago, {doing}")
    return "\n".join(lines)


_USAGE = """python -m dse.status: how far a study is, read from its storage while it runs.

Trials by state, COMPLETE against the budget, front size and hypervolume, retried trials,
the workers seen and when each last reported, and the time to finish at the recent rate.
Takes the same overrides as python -m dse.search.

Main overrides:
  study=<name>                        the study's config (its name and budget)
  storage=sqlite|journal|postgres     where it lives (storage.url=... for another file or server)
  --json                              the same, as JSON (for scripts)

Examples:
  python -m dse.status study=mobilenet_cifar10
  python -m dse.status study=mobilenet_cifar10 storage=postgres --json
  python -m dse.status study=quickstart storage.url=sqlite:///runs/optuna.db"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        print(_USAGE)
        return 0
    as_json = "--json" in args
    overrides = [a for a in args if a != "--json"]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        try:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = compose(config_name="config", overrides=overrides)
        except HydraException as exc:
            raise ConfigError(f"{exc}\n{_USAGE}") from None
        url = str(cfg.storage.url)
        where = describe_storage(url)
        local = Path(url.removeprefix(SQLITE_PREFIX).removeprefix("journal:///"))
        if url.startswith((SQLITE_PREFIX, "journal:///")) and not local.exists():  # opening it would create it
            raise ConfigError(
                f"No study storage at {local.resolve()}: no search has run there yet. Run the status command "
                "where the search runs (the same directory, storage= and storage.url= overrides)."
            )
        study = load_studies(instantiate(cfg.storage), [str(cfg.study.name)], where)[str(cfg.study.name)]
        status = study_status(study, where, int(cfg.study.n_trials))
    except (DSEError, InstantiationException) as exc:  # a storage refusing inside Hydra's instantiate too
        error = dse_error_of(exc)
        if error is None:
            raise
        _logger.error("%s", error)
        return 2
    print(json.dumps(asdict(status), indent=2) if as_json else format_status(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
