"""Trials per hour with 1 and 2 workers on one study (journal file and PostgreSQL), and each storage's overhead.

    python benchmarks/worker_scaling.py [--trials 40] [--repeats 2] [--images 1000]

Each worker is ``python -m dse.search study=quickstart`` with one torch thread (what
``SLURM_CPUS_PER_TASK=1`` gives it) and MLflow tracking on, as users run it. The rate is
the steady state: complete trials per hour between a run's first and last completion
(start-up excluded: it is paid once per worker, not per trial). Configurations are
interleaved over ``--repeats`` rounds so the machine's drift hits all alike; the median
rate is reported. A reference row runs one worker with both cores (two threads).

The storage overhead is measured apart: the storage calls the trial loop makes per
trial (ask with 4 parameters, 10 attributes, the three reads of the duplicate check,
budget gate and run clean-up, tell), with no evaluation, in a study that already holds
200 trials; milliseconds per trial.

Last line: ``scaling_journal=<2-worker/1-worker rate> scaling_postgres=<same>``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from dse.study.storage import create_storage
from dse.testing.postgres import temporary_postgres


def _storage_url(storage: str, folder: Path, pg: dict[str, str]) -> str:
    if storage == "journal":
        return f"journal:///{folder}/mlruns/optuna.journal"
    if storage == "sqlite":
        return f"sqlite:///{folder}/mlruns/optuna.db"
    return "postgresql+psycopg2://dse:@127.0.0.1:{}/dse".format(pg["DSE_PG_PORT"])


def run_workers(storage: str, workers: int, threads: int, args: argparse.Namespace, pg: dict[str, str]) -> float:
    """Complete trials per hour of ``workers`` workers on a fresh study (steady state)."""
    name = f"scaling_{storage}_{workers}x{threads}_{time.time_ns()}"
    with tempfile.TemporaryDirectory(prefix="dse-scaling-") as tmp:
        env = {**os.environ, **pg}
        cmd = [
            sys.executable,
            "-m",
            "dse.search",
            "study=quickstart",
            f"study.name={name}",
            f"storage={storage}",
            f"study.n_trials={args.trials}",
            f"data.test_subset={args.images}",
            f"evaluation.threads={threads}",
        ]
        procs = [
            subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(workers)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"a worker failed:\n{err[-3000:]}")
        study = optuna.load_study(
            study_name=name, storage=create_storage(_storage_url(storage, Path(tmp), pg), heartbeat_interval=None)
        )
        trials = study.get_trials(states=(TrialState.COMPLETE,))
        ends = sorted(t.datetime_complete for t in trials if t.datetime_complete is not None)
        return 3600.0 * (len(ends) - 1) / (ends[-1] - ends[0]).total_seconds()


def storage_overhead_ms(url: str, trials: int = 60, existing: int = 200) -> float:
    """Milliseconds of storage calls per trial (the loop's calls, no evaluation) in a study of ``existing`` trials."""
    study = optuna.create_study(
        storage=create_storage(url), study_name=f"overhead_{time.time_ns()}", directions=["maximize", "minimize"]
    )
    choices = ["1", "2", "3", "exact"]

    def trial_loop(trial: optuna.Trial) -> tuple[float, float]:
        values = [trial.suggest_categorical(f"decimals.g{i}", choices) for i in range(4)]
        for i in range(10):
            trial.set_user_attr(f"attr{i}", i)
        for _ in range(3):  # duplicate check, budget gate, closing dead runs
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED))
        return float(len(set(values))), float(trial.number % 7)

    study.optimize(trial_loop, n_trials=existing)  # the study a long search has
    start = time.perf_counter()
    study.optimize(trial_loop, n_trials=trials)
    return 1000.0 * (time.perf_counter() - start) / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40, help="study budget per run")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--images", type=int, default=1000, help="search images per trial (quickstart: 1000)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configs = [("journal", 1, 1), ("journal", 2, 1), ("postgres", 1, 1), ("postgres", 2, 1), ("journal", 1, 2)]
    rates: dict[tuple[str, int, int], list[float]] = {c: [] for c in configs}
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(temporary_postgres())
        for round_ in range(args.repeats):
            for config in configs if round_ % 2 == 0 else reversed(configs):
                rates[config].append(run_workers(*config, args=args, pg=pg))
                print(
                    f"round {round_ + 1}: {config[0]:8s} {config[1]} worker(s) x {config[2]} thread(s): "
                    f"{rates[config][-1]:7.0f} trials/h",
                    flush=True,
                )
        print()
        print(f"Complete quickstart trials per hour ({args.images} images, median of {args.repeats} interleaved runs):")
        print(f"{'storage':10s} {'workers x threads':>18s} {'trials/h':>9s} {'vs 1 worker':>12s}")
        median = {c: statistics.median(r) for c, r in rates.items()}
        for (storage, workers, threads), rate in median.items():
            ratio = rate / median[(storage, 1, 1)]
            print(f"{storage:10s} {f'{workers} x {threads}':>18s} {rate:9.0f} {ratio:11.2f}x")
        print()
        print("Storage overhead per trial (the loop's storage calls, no evaluation, study of 200 trials):")
        with tempfile.TemporaryDirectory() as tmp:
            for storage in ("sqlite", "journal", "postgres"):
                ms = storage_overhead_ms(_storage_url(storage, Path(tmp), pg))
                print(f"  {storage:9s} {ms:7.1f} ms")
    journal = median[("journal", 2, 1)] / median[("journal", 1, 1)]
    postgres = median[("postgres", 2, 1)] / median[("postgres", 1, 1)]
    print(f"scaling_journal={journal:.2f} scaling_postgres={postgres:.2f}")


if __name__ == "__main__":
    main()
