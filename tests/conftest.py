"""Shared fixtures: composed Hydra configs, a scratch working directory, the real data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dse.config_paths import CONFIG_DIR
from tests.services import postgres, slurm  # noqa: F401  (fixtures: PostgreSQL and SLURM on 127.0.0.1)

# The offline CIFAR-10 copy sits beside the checkout (../shared), in CI too.
CIFAR10_NPZ = Path(
    os.environ.get("DSE_CIFAR10_NPZ", Path(__file__).resolve().parents[2] / "shared/data/cifar10/cifar10.npz")
)
needs_cifar10 = pytest.mark.skipif(not CIFAR10_NPZ.is_file(), reason=f"offline CIFAR-10 not at {CIFAR10_NPZ}")

# Small and fast: a 200-image subset of the shipped subset, one timing pass.
FAST = ["data.test_subset=200", "evaluation.timing_repeats=1"]


def compose_config(overrides: list[str], config_name: str = "config") -> DictConfig:
    """The real config of a command (``config``: dse.search; ``sensitivity``; ``train``), composed as Hydra does."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory, as a user would: mlruns/ lands here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_module(workdir: Path, module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in ``workdir``, as a user would run it; output captured, never raises."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
    )
