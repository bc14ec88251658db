"""Every ``python -m`` entry point explains itself: --help says what it does, the main overrides, and examples."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_module


@pytest.mark.parametrize(
    ("module", "says"),
    [
        ("dse.search", "run (or resume) a multi-objective design-space exploration study"),
        ("dse.sensitivity", "the accuracy drop when only one layer (group) changes"),
        ("dse.training.train", "train a baseline classifier"),
        ("dse.retrain", "win back the accuracy an approximation costs"),
        ("dse.export", "a candidate as a deployment bundle"),
        ("dse.report", "every measured claim of dse and of its papers"),
        ("dse.compare", "the Pareto fronts of several studies in one plot and one table"),
        ("dse.status", "how far a study is, read from its storage while it runs"),
    ],
)
def test_help_is_short_and_useful(module: str, says: str) -> None:
    proc = run_module(Path.cwd(), module, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert says in text
    assert "Main overrides:" in text and "Examples:" in text
    assert text.count(f"python -m {module} ") >= 3  # three runnable examples
    assert "Powered by Hydra" not in text and "_target_: " not in text  # no generic text, no config dump
    assert len(text.splitlines()) < 50


# Root ignores mode bits: run the command without the capabilities that let it (as any other user would be).
_WITHOUT_ROOTS_BYPASS = (
    ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]
    if os.geteuid() == 0
    else []
)


def _as_any_user(cwd: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in ``cwd`` without root's bypass of mode bits."""
    return subprocess.run(
        [*_WITHOUT_ROOTS_BYPASS, sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("module", ["dse.search", "dse.sensitivity", "dse.training.train"])
def test_a_read_only_working_directory_is_one_line_naming_it_and_the_overrides(read_only: Path, module: str) -> None:
    run = _as_any_user(read_only, module)  # refused before any config is composed
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip() == run.stderr.strip().splitlines()[0]  # one line
    assert f"Cannot write in {read_only} (Permission denied)" in run.stderr
    assert "hydra.run.dir=" in run.stderr and "storage.url=" in run.stderr
    assert list(read_only.iterdir()) == []


def test_a_read_only_store_folder_after_the_run_folder_is_one_line_too(read_only: Path, tmp_path: Path) -> None:
    """The run folder points elsewhere, the study's store still in the read-only directory."""
    outputs = tmp_path / "outputs"
    run = _as_any_user(read_only, "dse.search", "study=quickstart", "data.test_subset=200", f"hydra.run.dir={outputs}")
    assert run.returncode == 2, run.stderr[-2000:]
    log = run.stdout + run.stderr
    assert f"Cannot write {read_only}/mlruns (Permission denied)" in log and "storage.url=" in log
    assert "Traceback" not in log
