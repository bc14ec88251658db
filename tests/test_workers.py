"""What a worker learns about itself from its scheduler: its index among workers launched together, its threads."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from dse.config_building import hydra_job_number
from dse.config_paths import CONFIG_DIR
from dse.worker.process import allocated_threads, worker_index


def test_worker_index_from_a_job_array_then_hydra_then_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert hydra_job_number() is None and worker_index(hydra_job_number()) == 0
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        HydraConfig.instance().set_config(compose("config", [], return_hydra_config=True))
        assert worker_index(hydra_job_number()) == 0  # a single run: Hydra leaves job.num missing
        cfg = compose("config", ["hydra.job.num=4"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            assert worker_index(hydra_job_number()) == 4  # a --multirun job of a local or submitit launcher
            monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
            assert worker_index(hydra_job_number()) == 7  # the array task wins: it is what the scheduler restarts
        finally:
            HydraConfig.instance().cfg = None  # type: ignore[assignment]


def test_threads_follow_the_slurm_allocation_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert allocated_threads(None) == 3
    assert allocated_threads(2) == 2
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert allocated_threads(None) is None
