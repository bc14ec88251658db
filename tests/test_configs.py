"""Every option of every config group composes, and instantiates to what it names."""

from pathlib import Path

import optuna
import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dse.candidates.evaluation import Evaluator
from dse.config_building import build_sampler
from dse.config_paths import CONFIG_DIR
from dse.cost.energy import EnergyModel
from dse.cost.latency import LatencyModel
from dse.objectives import parse_objectives
from dse.search_spaces import SearchSpace, decimal_places_space
from dse.tracking.mlflow_tracker import MlflowTracker
from dse.training.cifar10 import CIFAR10DataModule
from dse.training.models.tiny_cnn import tiny_cnn
from dse.training.time_series import TimeSeriesDataModule
from tests.conftest import compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("study", options("study"))
def test_every_study_composes(study: str) -> None:
    cfg = compose_config([f"study={study}"])
    assert cfg.study.name == study
    assert parse_objectives(cfg.study.objectives)
    assert isinstance(instantiate(cfg.space), SearchSpace)


def _leaves(node: object, prefix: str = "") -> dict[str, object]:
    """Every leaf of a YAML mapping as dotted keys (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, object] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


@pytest.mark.parametrize("study", options("study"))
def test_every_key_a_study_file_sets_is_what_the_config_holds(study: str) -> None:
    """A study file is a delta on top of config.yaml: whatever it sets must win (``_self_`` before ``study``)."""
    raw = yaml.safe_load((CONFIG_DIR / "study" / f"{study}.yaml").read_text())
    raw.pop("defaults", None)
    leaves = _leaves(raw)
    assert leaves, f"{study}.yaml sets nothing"
    cfg = OmegaConf.to_container(compose_config([f"study={study}"]), resolve=True)
    for key, value in leaves.items():
        held = OmegaConf.select(OmegaConf.create(cfg), key)
        held = OmegaConf.to_container(held) if OmegaConf.is_config(held) else held
        assert held == value, f"{study}.yaml sets {key}={value!r}, but the composed config holds {held!r}"


def test_quickstart_overrides_evaluation_and_final_eval() -> None:
    cfg = compose_config(["study=quickstart"])
    assert cfg.evaluation.timing_repeats == 2 and cfg.final_eval.enabled is False
    assert compose_config([]).evaluation.timing_repeats == 3  # the default stays where no study sets it


@pytest.mark.parametrize("sampler", options("sampler"))
def test_every_sampler_instantiates(sampler: str) -> None:
    space = decimal_places_space(granularity="uniform", decimals=[1, 2]).bind(tiny_cnn(), {"all": ".*"})
    built = build_sampler(compose_config([f"sampler={sampler}"]).sampler, space)
    assert isinstance(built, optuna.samplers.BaseSampler)
    if sampler == "grid":  # the bound space, known only at run time, is the grid
        assert isinstance(built, optuna.samplers.GridSampler) and built._search_space == {"decimals": [1, 2, "exact"]}


def test_evaluation_is_a_partial_that_takes_the_data_module() -> None:
    cfg = compose_config(["study=quickstart", "data.test_subset=100"])
    evaluator = instantiate(cfg.evaluation)(instantiate(cfg.data))
    assert isinstance(evaluator, Evaluator) and evaluator.n_images == 100 and evaluator.timing_repeats == 2


@pytest.mark.parametrize("tracking", options("tracking"))
def test_every_tracking_option_is_a_tracker_or_nothing(tracking: str, workdir: Path) -> None:
    cfg = compose_config([f"tracking={tracking}"]).tracking
    if tracking == "none":
        assert not cfg
    elif tracking == "mlflow_local":
        tracker = instantiate(cfg)
        assert isinstance(tracker, MlflowTracker) and tracker.plot_every == 5
        assert tracker.tracking_uri == f"sqlite:///{workdir}/mlruns/mlflow.db"
    else:
        assert cfg._target_ == "dse.tracking.mlflow_tracker.MlflowTracker" and cfg.tracking_uri.startswith("http")


def test_no_development_paths_in_shipped_configs() -> None:
    for path in CONFIG_DIR.rglob("*.yaml"):
        assert "../shared" not in path.read_text(), f"{path} points into the development checkout"


@pytest.mark.parametrize("space", options("space"))
def test_every_space_instantiates(space: str) -> None:
    assert isinstance(instantiate(compose_config([f"space={space}"]).space), SearchSpace)


@pytest.mark.parametrize("hardware", options("hardware"))
def test_every_hardware_preset_instantiates(hardware: str) -> None:
    cfg = compose_config([f"hardware={hardware}"]).hardware
    energy, latency = instantiate(cfg.energy), instantiate(cfg.latency)
    assert isinstance(energy, EnergyModel) and energy.name == hardware and energy.memory_pj_per_64bit["dram"] == 1300.0
    assert isinstance(latency, LatencyModel) and latency.fp32_mul_pj == energy.fp32_mul_pj


@pytest.mark.parametrize("data", options("data"))
def test_every_data_option_instantiates(data: str) -> None:
    assert isinstance(instantiate(compose_config([f"data={data}"]).data), (CIFAR10DataModule, TimeSeriesDataModule))


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_local_storages_open(storage: str, workdir: Path) -> None:
    cfg = compose_config([f"storage={storage}"])
    study = optuna.create_study(storage=instantiate(cfg.storage), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=instantiate(cfg.storage)).trials) == 2


def test_command_line_group_overrides_the_study() -> None:
    cfg = compose_config(["study=mobilenet_cifar10", "sampler=nsga2", "space=decimal_places_uniform"])
    assert cfg.sampler._target_ == "optuna.samplers.NSGAIISampler"
    assert cfg.space.granularity == "uniform"
