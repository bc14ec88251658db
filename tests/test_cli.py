"""Every ``python -m`` entry point explains itself: --help says what it does, the main overrides, and examples."""

from __future__ import annotations

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
    assert "Powered by Hydra" not in text and "_target_" not in text  # no generic text, no config dump
    assert len(text.splitlines()) < 50
