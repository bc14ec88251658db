"""``python -m dse.sensitivity``: the accuracy drop when only one layer (group) changes.

For each unit (a layer group, or a layer) and each value of one knob, only that
unit takes the value and the rest stays exact. Paper 1's experiments 2 and 4 are
the special case ``sensitivity.knob=decimals`` at group granularity. The table
(CSV) and a heatmap (PNG) go to an MLflow run and to the working directory.

    python -m dse.sensitivity study=mobilenet_cifar10 sensitivity.knob=decimals sensitivity.values=[1,2,3,4]
    python -m dse.sensitivity study=mobilenet_cifar10 sensitivity.knob=weight_format sensitivity.values=[e4m3,int4]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig
from tqdm.auto import tqdm

from dse.assignment import LayerConfig
from dse.cli import run_command, writable_run_dir
from dse.config_building import build_tracker, build_trained_model, candidate_evaluator, model_layer_groups
from dse.config_paths import CONFIG_DIR
from dse.exceptions import ConfigError
from dse.search_spaces import resolve_groups

__all__ = ["plot_sensitivity", "run_sensitivity"]

_logger = logging.getLogger(__name__)
_KNOBS = ("decimals", "multiplier", "weight_format", "activation_format")


def plot_sensitivity(table: pd.DataFrame, knob: str, path: Path) -> Path:
    """Heatmap of accuracy drop (points) per unit and value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = table.pivot(index="unit", columns="value", values="accuracy_drop_points").reindex(table["unit"].unique())
    fig, ax = plt.subplots(figsize=(1.1 * len(grid.columns) + 3, 0.35 * len(grid) + 1.5))
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="magma_r", aspect="auto", vmin=0)
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns], rotation=45, ha="right")
    ax.set_yticks(range(len(grid)), list(grid.index), fontsize=8)
    for (i, j), v in pd.DataFrame(grid.to_numpy()).stack().items():
        ax.text(
            j,
            i,
            f"{v:.1f}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v > grid.to_numpy().max() / 2 else "black",
        )
    ax.set_xlabel(knob)
    fig.colorbar(image, ax=ax, label="accuracy drop (points)")
    ax.set_title(f"Sensitivity: only one unit takes {knob}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_sensitivity(cfg: DictConfig) -> pd.DataFrame:
    """Evaluate every (unit, value) of ``cfg.sensitivity``; return the table."""
    sens = cfg.sensitivity
    if sens.knob not in _KNOBS:
        raise ConfigError(f"sensitivity.knob={sens.knob!r} is not a layer knob; choose one of {list(_KNOBS)}.")
    if sens.granularity not in ("group", "layer"):
        raise ConfigError(f"sensitivity.granularity must be group or layer, got {sens.granularity!r}.")
    model = build_trained_model(cfg.model)
    groups = resolve_groups(model, model_layer_groups(cfg.model, model))
    units = groups if sens.granularity == "group" else {n: [n] for members in groups.values() for n in members}
    values: list[Any] = list(sens["values"])  # sens.values would be the mapping method
    for v in values:
        LayerConfig(**{sens.knob: v})  # bad values fail before any evaluation
    candidates = candidate_evaluator(cfg, model)
    base = candidates.evaluate({}, timing=False).metrics
    rows = []
    with tqdm(total=len(units) * len(values), desc=f"sensitivity {sens.knob}", unit="eval") as bar:
        for unit, layers in units.items():
            for value in values:
                m = candidates.evaluate({n: LayerConfig(**{sens.knob: value}) for n in layers}, timing=False).metrics
                rows.append(
                    {
                        "knob": sens.knob,
                        "unit": unit,
                        "layers": len(layers),
                        "value": value,
                        "accuracy": m["accuracy"],
                        "accuracy_drop_points": 100 * (base["accuracy"] - m["accuracy"]),
                        "energy_uj": m["energy_uj"],
                        "energy_saving_pct": 100 * (1 - m["energy_uj"] / base["energy_uj"]),
                    }
                )
                bar.update(1)
    table = pd.DataFrame(rows)
    out = Path(sens.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, png = out / f"sensitivity_{sens.knob}.csv", out / f"sensitivity_{sens.knob}.png"
    table.to_csv(csv, index=False)
    plot_sensitivity(table, sens.knob, png)
    run_id = build_tracker(cfg).log_standalone_run(
        f"sensitivity-{cfg.model.name}-{sens.knob}",
        {"dse_role": "sensitivity", "dse_knob": sens.knob},
        {"baseline_accuracy": base["accuracy"], "model": cfg.model.name, "granularity": sens.granularity},
        [csv, png],
        artifact_path="sensitivity",
    )
    if run_id:
        _logger.info("Sensitivity logged to MLflow run %s", run_id)
    _logger.info("Baseline accuracy %.4f; table %s, plot %s", base["accuracy"], csv, png)
    return table


@writable_run_dir
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="sensitivity")
def main(cfg: DictConfig) -> None:
    run_command(run_sensitivity, cfg)


if __name__ == "__main__":
    main()
