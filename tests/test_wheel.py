"""dse as a user installs it: a wheel, in a fresh virtual environment, run from outside the checkout.

The environment reuses this one's third-party packages (torch alone is gigabytes) through a path entry,
but not its editable install of dse: only the wheel's dse is importable there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    "dse.search",
    "dse.retrain",
    "dse.export",
    "dse.compare",
    "dse.status",
    "dse.sensitivity",
    "dse.report",
    "dse.training.train",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv with dse installed from a wheel built from this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    skip = (".git", ".venv", "mlruns", "outputs", "multirun", "build", "*.egg-info", ".kernel-cache", "docs")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*skip, "checkpoints", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(source)],
        check=True,
        timeout=600,
    )
    (wheel,) = tmp.glob("dse-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # third-party packages from this environment, appended after the venv's own (a plain path: its .pth
    # files, the editable dse among them, are not processed)
    Path(site, "thirdparty.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
        check=True,
        timeout=600,
    )
    return python


def _run(python: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    return subprocess.run(
        [str(python), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def test_the_wheel_s_dse_is_the_one_imported(installed: Path, tmp_path: Path) -> None:
    proc = _run(installed, tmp_path, "-c", "import dse, dse.report, dse.training; print(dse.__file__)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(ROOT) not in proc.stdout and "site-packages" in proc.stdout


def test_the_wheel_ships_the_manifest_schema(installed: Path, tmp_path: Path) -> None:
    code = "from dse.deployment.bundle import manifest_schema; print(manifest_schema()['title'])"
    proc = _run(installed, tmp_path, "-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "dse deployment manifest"


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_s_help_runs_from_the_wheel(installed: Path, tmp_path: Path, module: str) -> None:
    proc = _run(installed, tmp_path, "-m", module, "--help", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert module.split(".")[-1] in proc.stdout


def test_the_quickstart_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    proc = _run(installed, tmp_path, "-m", "dse.search", "study=quickstart", "study.n_trials=3", "data.test_subset=200")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "mlruns" / "optuna.db").is_file() and (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert "Done: 3 complete trials" in proc.stdout + proc.stderr
