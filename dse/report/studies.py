"""Stages that run a study do it as a user does: ``python -m dse.search study=<committed study>``.

The study lives in the report's own storage (``report.work_dir/<study>.db``), so a re-run of the report
resumes it, and a user's ``mlruns/optuna.db`` is left alone. The trials (with their MLflow run ids and the
front's full-test-set accuracy) are stored as the stage's table.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence

import optuna
import pandas as pd

from dse.exceptions import DSEError
from dse.objectives import Objective
from dse.report.context import ReportContext
from dse.study.final_evaluation import held_out_results
from dse.study.storage import create_storage
from dse.tracking.pareto import trials_table

__all__ = ["run_study", "study_trials"]

_logger = logging.getLogger(__name__)


def run_study(ctx: ReportContext, study: str, overrides: Sequence[str] = ()) -> optuna.Study:
    """Run (or resume) the committed study ``study`` to its budget; return it."""
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{(ctx.work_dir / f'{study}.db').resolve()}"  # one file each: SQLite takes one worker
    log = ctx.work_dir / f"{study}.log"
    command = [
        sys.executable,
        "-m",
        "dse.search",
        f"study={study}",
        f"study.name={study}",
        "storage=sqlite",
        f"storage.url={url}",
        *ctx.overrides,
        *overrides,
        f"hydra.run.dir={ctx.work_dir / 'hydra' / study}",
    ]
    _logger.info("Running study %s (log: %s): %s", study, log, " ".join(command[1:]))
    with open(log, "a") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise DSEError(
            f"The study {study!r} stopped with exit code {code}; its trials so far are kept in {url} and a re-run "
            f"of the report resumes it. The end of its log ({log}):\n{tail}"
        )
    return optuna.load_study(study_name=study, storage=create_storage(url, heartbeat_interval=None))


def study_trials(study: optuna.Study) -> pd.DataFrame:
    """Every COMPLETE trial: objectives, metrics, parameters, MLflow run id, ``on_front`` and, for the front,
    its accuracy on the full test set (``final_accuracy``), ordered by trial number."""
    objectives = [
        Objective(name, "maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize")
        for name, d in zip(study.metric_names or [], study.directions, strict=True)
    ]
    table = trials_table(study, objectives)
    front = {t.number for t in study.best_trials}
    table["on_front"] = table["trial"].isin(front)
    finals = pd.DataFrame([{"trial": number, **v} for number, v in held_out_results(study).items()])
    if not finals.empty:
        table = table.merge(finals, on="trial", how="left")
    # nothing that points into a store the report does not ship (MLflow run ids), nor bulky per-layer data
    keep = [c for c in table.columns if not c.startswith(("dse_", "worker", "torch_", "mlflow")) and c != "layers"]
    return table[keep].sort_values("trial").reset_index(drop=True)
