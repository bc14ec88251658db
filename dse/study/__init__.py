"""A study: where it lives (storage), how it proposes (sampler), how it is opened and run.

- :mod:`.storage`: SQLite, PostgreSQL or a journal file, with heartbeats;
- :mod:`.sampler`: the configured Optuna sampler (the grid gets the bound space);
- :mod:`.create`: create or re-open a study with the config it was created with;
- :mod:`.objectives`: the metrics a trial reports and which are optimised;
- :mod:`.runner`: the trial loop (budget, baseline, duplicates, constraints);
- :mod:`.final_evaluation`: the front re-evaluated on the full test set.
"""

from .create import open_study
from .objectives import TRIAL_METRICS, Objective, parse_objectives
from .runner import StudyRunner, StudySettings, count_complete
from .sampler import build_sampler
from .storage import create_storage, describe_storage, has_heartbeat

__all__ = [
    "TRIAL_METRICS",
    "Objective",
    "StudyRunner",
    "StudySettings",
    "build_sampler",
    "count_complete",
    "create_storage",
    "describe_storage",
    "has_heartbeat",
    "open_study",
    "parse_objectives",
]
