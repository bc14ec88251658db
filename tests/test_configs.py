"""Every option of every config group composes, and instantiates to what it names."""

from pathlib import Path

import optuna
import pytest
from hydra.utils import instantiate

from dse.config_paths import CONFIG_DIR
from dse.cost.energy import EnergyModel
from dse.cost.latency import LatencyModel
from dse.search_spaces import SearchSpace
from dse.study.objectives import parse_objectives
from dse.study.storage import create_storage
from dse.training.cifar10 import CIFAR10DataModule
from tests.conftest import compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("study", options("study"))
def test_every_study_composes(study: str) -> None:
    cfg = compose_config([f"study={study}"])
    assert cfg.study.name == study
    assert parse_objectives(cfg.study.objectives)
    assert isinstance(instantiate(cfg.space), SearchSpace)


@pytest.mark.parametrize("sampler", [s for s in options("sampler") if s != "grid"])
def test_every_sampler_instantiates(sampler: str) -> None:
    assert isinstance(instantiate(compose_config([f"sampler={sampler}"]).sampler), optuna.samplers.BaseSampler)


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
    assert isinstance(instantiate(compose_config([f"data={data}"]).data), CIFAR10DataModule)


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_local_storages_open(storage: str, workdir: Path) -> None:
    cfg = compose_config([f"storage={storage}"])
    study = optuna.create_study(storage=create_storage(**cfg.storage), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=create_storage(**cfg.storage)).trials) == 2


def test_command_line_group_overrides_the_study() -> None:
    cfg = compose_config(["study=mobilenet_cifar10", "sampler=nsga2", "space=decimal_places_uniform"])
    assert cfg.sampler._target_.endswith("NSGAIISampler")
    assert cfg.space.granularity == "uniform"
