"""The study seen through the viewers users open: optuna-dashboard on the study storage, the MLflow UI."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest

from dse.search import run_search
from dse.testing.postgres import free_port
from dse.tracking.mlflow_tracker import UI_VIEW, MlflowTracker
from tests.conftest import FAST, compose_config

pytestmark = pytest.mark.slow
OBJECTIVES = "study.objectives=[{name: accuracy, direction: maximize}, {name: energy_uj, direction: minimize}]"


def _get_json(url: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextlib.contextmanager
def _serving(args: list[str], cwd: Path) -> Iterator[subprocess.Popen]:
    """A server process for the length of the block (its output in cwd/server.log)."""
    with open(cwd / "server.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_optuna_dashboard_shows_the_study_with_named_objectives_and_metrics(workdir: Path) -> None:
    study = run_search(
        compose_config(["study=quickstart", "study.n_trials=3", "study.measure_time=false", OBJECTIVES, *FAST])
    ).study
    port = free_port()
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    with _serving([str(dashboard), "sqlite:///mlruns/optuna.db", "--host", "127.0.0.1", "--port", str(port)], workdir):
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies")
        assert isinstance(studies, dict)
        (summary,) = [s for s in studies["study_summaries"] if s["study_name"] == "quickstart"]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")
        assert isinstance(detail, dict)
        assert detail["objective_names"] == ["accuracy", "energy_uj"]  # not "Objective 0/1"
        assert sorted(t["number"] for t in detail["best_trials"]) == sorted(t.number for t in study.best_trials)
        trial = next(t for t in detail["trials"] if t["number"] == 1)
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert float(attrs["accuracy"]) == pytest.approx(study.trials[1].user_attrs["accuracy"])
        assert float(attrs["energy_uj"]) == pytest.approx(study.trials[1].user_attrs["energy_uj"])
        by_kind = study.trials[1].user_attrs["energy_uj_by_layer_kind"]  # the layer costs in brief
        assert sum(by_kind.values()) == pytest.approx(study.trials[1].user_attrs["energy_uj"], rel=1e-3)
        assert "energy_uj_by_layer_kind" in attrs and "assignment_key" in attrs


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# CI installs Debian's chromium and chromium-driver (.ci/run): there the test never skips
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
)


@contextlib.contextmanager
def _chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, (
        "chromium and chromedriver must be on PATH (apt-get install chromium chromium-driver)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@needs_chromium
def test_the_mlflow_ui_shows_the_front_its_table_and_the_hypervolume_curve(workdir: Path) -> None:
    """A real ``mlflow server`` on the search's store, opened in headless Chromium as a person would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    overrides = ["study=quickstart", "study.n_trials=4", "study.measure_time=false", "tracking.plot_every=1"]
    result = run_search(compose_config([*overrides, OBJECTIVES, *FAST]))
    front_size, n_trials = len(result.study.best_trials), 4
    result_where = MlflowTracker(f"sqlite:///{workdir}/mlruns/mlflow.db")
    result_where.parent_run_id = result.parent_run_id
    result_where = result_where.where()
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("dse").experiment_id
    port = free_port()
    server = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", "sqlite:///mlruns/mlflow.db"]
    with (
        _serving([*server, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], workdir),
        _chromium() as page,
    ):
        _wait_until_up(f"http://127.0.0.1:{port}/health")
        run_page = f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs/{result.parent_run_id}"
        wait = WebDriverWait(page, 90)

        # 1. the interactive front, inside the artifact viewer's frame: plotly's SVG with every trial drawn
        page.get(f"{run_page}/artifacts/pareto/pareto_front.html")
        frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe")))
        wait.until(lambda _: frame.size["height"] > 200)
        page.switch_to.frame(frame)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "svg.main-svg g.points path.point")))
        points = page.find_elements(By.CSS_SELECTOR, "g.points path.point")
        panels = len(page.find_elements(By.CSS_SELECTOR, "g.cartesianlayer > g.subplot"))  # one a projection
        assert panels >= 2 and len(points) >= n_trials * panels  # every trial in every panel (the baseline twice)
        page.switch_to.default_content()
        page.save_screenshot(str(workdir / "mlflow_front.png"))

        # 2. the front as a table: one row per Pareto trial
        page.get("about:blank")  # a fresh load: the UI routes by the URL's fragment
        page.get(f"{run_page}/artifacts/pareto/pareto_front.csv")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table tbody tr")))
        rows = page.find_elements(By.CSS_SELECTOR, "table tbody tr:not([aria-hidden='true'])")  # not antd's measure row
        assert len(rows) == front_size
        assert page.find_elements(By.XPATH, f"//*[text()='Previewing the first {front_size} rows']")
        page.save_screenshot(str(workdir / "mlflow_front_table.png"))

        # 3. the hypervolume's history as a curve (one point a trial) among the run's metric charts
        page.get("about:blank")
        page.get(f"{run_page}/model-metrics")
        title = wait.until(ec.presence_of_element_located((By.XPATH, "//*[normalize-space(text())='hypervolume']")))
        card = wait.until(
            lambda _: title.find_elements(By.XPATH, "./ancestor::*[.//*[contains(@class,'js-plotly-plot')]][1]")
        )[0]
        wait.until(lambda _: card.find_elements(By.CSS_SELECTOR, ".js-plotly-plot path.js-line"))  # the curve
        steps = wait.until(lambda _: card.find_elements(By.CSS_SELECTOR, ".js-plotly-plot g.points path.point"))
        assert len(steps) == n_trials  # one point a complete trial
        page.save_screenshot(str(workdir / "mlflow_hypervolume.png"))

        # 4. the link dse prints opens the parent run in the model-training view (MLflow 3 would open its GenAI
        # view: traces, evaluation runs), and the experiment's run table lists the study's runs
        link = next(line for line in result_where if "http://127.0.0.1:5000/" in line).split("then ", 1)[1]
        page.get("about:blank")
        page.get(link.replace("127.0.0.1:5000", f"127.0.0.1:{port}"))
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[normalize-space(text())='Model metrics']")))
        assert not page.find_elements(By.XPATH, "//*[normalize-space(text())='Evaluation runs']")
        page.get("about:blank")
        page.get(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs{UI_VIEW}")
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[normalize-space(text())='Run Name']")))
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[normalize-space(text())='quickstart']")))
        assert not page.find_elements(By.XPATH, "//*[normalize-space(text())='Evaluation runs']")
        page.save_screenshot(str(workdir / "mlflow_runs.png"))
    assert client.get_experiment(experiment).tags.get("mlflow.experimentKind") == "custom_model_development"
    for shot in ("mlflow_front.png", "mlflow_front_table.png", "mlflow_hypervolume.png", "mlflow_runs.png"):
        assert (workdir / shot).stat().st_size > 10_000  # a real picture, kept with the test's files


def _wait_until_up(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
