"""The architecture, checked: who may import Hydra, MLflow and Optuna's private API; no import cycles.

- Hydra and OmegaConf: only the commands (``python -m dse.<command>``) and the config building they share;
  the library takes typed settings.
- MLflow: only the MLflow tracker; everything else talks to the :class:`~dse.tracking.tracker.Tracker` contract.
- Optuna's private modules and names: only :mod:`dse.optuna_internals`.
- The numeric library (numerics, multipliers, emulation, cost) imports none of Optuna, MLflow, Hydra or Lightning.
- No module-level import cycle among dse's modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package name -> folder (training/ and search_spaces/ install as dse.training and dse.search_spaces)
FOLDERS = {"dse": ROOT / "dse", "dse.training": ROOT / "training", "dse.search_spaces": ROOT / "search_spaces"}
COMMANDS = {
    "dse.search",
    "dse.retrain",
    "dse.export",
    "dse.compare",
    "dse.status",
    "dse.sensitivity",
    "dse.training.train",
    "dse.config_paths",  # where the commands' configs live
    "dse.cli",  # what every command shares (exit codes, quiet logs)
    "dse.config_building",  # the library's objects built from a composed config
    "dse.chosen_candidate",  # the study trial or assignment file a command acts on
}
COMMAND_PACKAGES = ("dse.report",)  # python -m dse.report: each stage reads the composed config
NUMERIC = ("dse.numerics", "dse.multipliers", "dse.emulation", "dse.cost")
ADAPTER = "dse.optuna_internals"
TRACKER = "dse.tracking.mlflow_tracker"
PRIVATE_OPTUNA = re.compile(r"optuna(\.\w+)*\._\w+|\._storage\b|\._trial_id\b|_get_stale_trial_ids")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path, module: str, top_level_only: bool = False) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _is_command(module: str) -> bool:
    return module in COMMANDS or module.startswith(COMMAND_PACKAGES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_commands_and_config_building_import_hydra(module: str) -> None:
    if _is_command(module):
        return
    uses = {n for n in _imports(MODULES[module], module) if n.split(".")[0] in ("hydra", "omegaconf")}
    assert not uses, f"{module} imports {sorted(uses)}: take typed settings built in dse.config_building instead"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_mlflow_tracker_imports_mlflow(module: str) -> None:
    if module == TRACKER:
        return
    uses = {n for n in _imports(MODULES[module], module) if n.split(".")[0] == "mlflow"}
    assert not uses, f"{module} imports {sorted(uses)}: record through dse.tracking.tracker.Tracker"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_adapter_touches_optuna_internals(module: str) -> None:
    if module == ADAPTER:
        return
    text = MODULES[module].read_text()
    private = sorted({m.group(0) for m in PRIVATE_OPTUNA.finditer(text)})
    assert not private, f"{module} uses Optuna's private {private}: go through {ADAPTER}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(NUMERIC)))
def test_the_numeric_library_imports_no_framework(module: str) -> None:
    frameworks = {"optuna", "mlflow", "hydra", "omegaconf", "lightning", "pytorch_lightning"}
    uses = {n for n in _imports(MODULES[module], module) if n.split(".")[0] in frameworks}
    assert not uses, f"{module} imports {sorted(uses)}"


def test_no_import_cycle_among_dse_modules() -> None:
    graph = {m: {n for n in _imports(p, m, top_level_only=True) if n in MODULES and n != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(f"{node}."):
                continue  # a package importing its own modules
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("dse.tracking")))
def test_tracking_knows_nothing_of_the_study_loop(module: str) -> None:
    """The loop reports to a tracker; a tracker never reaches back into the loop (type-only imports included)."""
    uses = {n for n in _imports(MODULES[module], module) if n.startswith("dse.study")}
    assert not uses, f"{module} imports {sorted(uses)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _is_command(m)))
def test_the_library_never_imports_a_command(module: str) -> None:
    uses = {n for n in _imports(MODULES[module], module) if _is_command(n) and not n.startswith(module)}
    assert not uses, f"{module} imports the command module(s) {sorted(uses)}"


# Each package's layer: a module imports only from its own layer or below (type-only imports included), so
# the library reads bottom-up and no arrow runs back up. Commands sit on top.
LAYERS = [
    ["dse.exceptions", "dse.file_system", "dse.code_version"],  # (and the package itself: its version)
    ["dse.numerics"],
    ["dse.multipliers"],
    ["dse.assignment", "dse.batchnorm_folding", "dse.objectives", "dse.store_urls", "dse.optuna_internals"],
    ["dse.emulation", "dse.cost", "dse.search_spaces", "dse.worker", "dse.testing", "dse.tracking", "dse.deployment"],
    ["dse.training"],
    ["dse.candidates"],
    ["dse.study"],
]


def _layer(module: str) -> int:
    if module == "dse":
        return 0
    if _is_command(module):
        return len(LAYERS)
    for rank, packages in enumerate(LAYERS):
        if any(module == p or module.startswith(f"{p}.") for p in packages):
            return rank
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_back_up_the_layers(module: str) -> None:
    rank = _layer(module)
    above = {n for n in _imports(MODULES[module], module) if n in MODULES and _layer(n) > rank}
    assert not above, f"{module} (layer {rank}) imports {sorted(above)} from a layer above it"


def test_the_boundaries_are_checked_on_real_modules() -> None:
    """The checks above read the real tree (not an empty one) and would see a violation."""
    assert {"dse.search", ADAPTER, TRACKER, "dse.emulation.layers", "dse.training.cifar10"} <= set(MODULES)
    assert "mlflow" in {n.split(".")[0] for n in _imports(MODULES[TRACKER], TRACKER)}
    assert PRIVATE_OPTUNA.search(MODULES[ADAPTER].read_text())
