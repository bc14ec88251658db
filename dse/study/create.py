"""Creating a study, or re-opening it with the config it was created with."""

from __future__ import annotations

import warnings

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage

from dse.exceptions import ConfigError
from dse.objectives import Objective
from dse.search_spaces import BoundSpace

__all__ = ["load_studies", "open_study"]


def open_study(
    name: str,
    storage: BaseStorage,
    sampler: optuna.samplers.BaseSampler,
    objectives: list[Objective],
    space: BoundSpace,
    where: str,
) -> optuna.Study:
    """Create the study, or load it if it exists with the same objectives and space.

    The objectives, parameters and choices are kept in the study's user attributes:
    Optuna rejects a parameter whose choices change within a study (mid-trial), so a
    resume with another space or pruning table is refused up front. ``where`` names
    the storage in messages (password masked).
    """
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        directions=[o.direction for o in objectives],
        load_if_exists=True,
    )
    names = [o.name for o in objectives]
    choices = {param: [str(c) for c in values] for param, values in space.grid().items()}
    stored = study.user_attrs.get("objectives")
    if stored is None:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use: no warning on every run
            warnings.simplefilter("ignore", ExperimentalWarning)
            study.set_metric_names(names)  # optuna-dashboard and Optuna's plots label the objectives by name
        study.set_user_attr("objectives", names)
        study.set_user_attr("space_params", sorted(space.params))
        study.set_user_attr("space_choices", choices)
    elif stored != names or study.user_attrs.get("space_params") != sorted(space.params):
        raise ConfigError(
            f"Study {name!r} in {where} was created with objectives {stored} and parameters "
            f"{study.user_attrs.get('space_params')}; this run asks for {names} and {sorted(space.params)}. "
            f"Resume it with its original config, or start a new study: study.name={_free_name(name, storage)}"
        )
    elif [d.name.lower() for d in study.directions] != [o.direction for o in objectives]:
        stored_directions = [f"{n} {d.name.lower()}" for n, d in zip(names, study.directions, strict=True)]
        asked = [f"{o.name} {o.direction}" for o in objectives]
        raise ConfigError(
            f"Study {name!r} in {where} was created to {', '.join(stored_directions)}; this run asks to "
            f"{', '.join(asked)}. Optuna keeps a study's directions: resume it with its original directions, "
            f"or start a new study: study.name={_free_name(name, storage)}"
        )
    elif study.user_attrs.get("space_choices", choices) != choices:
        changed = sorted(n for n in choices if study.user_attrs["space_choices"].get(n) != choices[n])
        raise ConfigError(
            f"Study {name!r} was created with other choices for {changed[:3]} (a different space or "
            "pruning table). Resume it with its original space and pruning settings, or start a new study: "
            f"study.name={_free_name(name, storage)}"
        )
    return study


def load_studies(storage: BaseStorage, names: list[str], where: str) -> dict[str, optuna.Study]:
    """The studies ``names`` in ``storage``; a missing one is refused with the names that are there.
    ``where`` names the storage in the message (password masked)."""
    existing = sorted(optuna.get_all_study_names(storage))
    missing = [n for n in names if n not in existing]
    if missing:
        listed = ", ".join(existing) or "none"
        raise ConfigError(
            f"No study {', '.join(map(repr, missing))} in {where}. Studies there: {listed}. "
            "Name one of these (study.name=<name>, or studies=[...] to compare), and storage=... for another storage."
        )
    return {n: optuna.load_study(study_name=n, storage=storage) for n in names}


def _free_name(name: str, storage: BaseStorage) -> str:
    """``name-2``, ``name-3``, ...: the first that no study in ``storage`` has."""
    taken = set(optuna.get_all_study_names(storage))
    return next(f"{name}-{i}" for i in range(2, len(taken) + 3) if f"{name}-{i}" not in taken)
