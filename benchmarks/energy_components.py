"""What dominates each hardware preset's energy estimate: the four components for MobileNetV2-for-CIFAR
with every layer in float32, in exact int8, and on the cheapest multiplier of the multiplier study.

Cost model only (dse/cost/energy.py): no image is evaluated, so it takes seconds.

    python benchmarks/energy_components.py [--out docs/figures/energy_components.png]

Last line: ``multiply share of int8: horowitz_45nm X% horowitz_45nm_onchip Y%``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hydra import compose, initialize_config_dir

from dse.assignment import LayerConfig
from dse.candidates.evaluator import ENERGY_COMPONENTS, CandidateEvaluator
from dse.config_building import build_trained_model, candidate_evaluator
from dse.config_paths import CONFIG_DIR
from dse.multipliers import get_multiplier

PRESETS = ("horowitz_45nm", "horowitz_45nm_onchip")
LABELS = {
    "energy_multiply_uj": "multiplies",
    "energy_accumulate_uj": "additions",
    "energy_weight_memory_uj": "weight memory",
    "energy_activation_memory_uj": "activation memory",
}


def components(preset: str) -> tuple[dict[str, dict[str, float]], str]:
    """Energy by component (uJ) of fp32, int8 and the cheapest circuit of the multiplier study, under ``preset``."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", ["study=mobilenet_cifar10_multipliers", f"hardware={preset}"])
    model = build_trained_model(cfg.model)
    candidates = candidate_evaluator(cfg, model)
    circuits = [get_multiplier(str(m)) for m in cfg.space.multipliers]
    cheapest = min((m for m in circuits if m.power_ratio is not None), key=lambda m: m.power_ratio or 1.0)
    settings = {
        "float32": {},
        "int8 (exact_s8)": {n: LayerConfig(multiplier="exact_s8") for n in candidates.shapes},
        f"{cheapest.name} (p={cheapest.power_ratio:.2f})": {
            n: LayerConfig(multiplier=cheapest.name) for n in candidates.shapes
        },
    }
    table = {
        label: CandidateEvaluator.costs(candidates.cost_table(model, assignment))
        for label, assignment in settings.items()
    }
    return {label: {c: row[c] for c in ENERGY_COMPONENTS} for label, row in table.items()}, cheapest.name


def plot(results: dict[str, dict[str, dict[str, float]]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    colours = ["tab:red", "tab:orange", "tab:blue", "tab:green"]
    for ax, (preset, rows) in zip(axes[0], results.items(), strict=True):
        labels = list(rows)
        totals = [sum(rows[label].values()) for label in labels]
        bottom = [0.0] * len(labels)
        for component, colour in zip(ENERGY_COMPONENTS, colours, strict=True):
            shares = [100 * rows[label][component] / total for label, total in zip(labels, totals, strict=True)]
            ax.bar(labels, shares, bottom=bottom, color=colour, label=LABELS[component])
            bottom = [b + v for b, v in zip(bottom, shares, strict=True)]
        for i, total in enumerate(totals):  # the absolute size, which the shares hide
            ax.text(i, 101, f"{total:.1f} uJ", ha="center", va="bottom", fontsize=9)
        ax.set_ylim(0, 110)
        ax.set_ylabel("share of the energy per image (%)")
        ax.set_title(preset, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=9)
    fig.suptitle("MobileNetV2-for-CIFAR: what each preset's estimate is made of (dse/cost/energy.py)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/figures/energy_components.png"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = {}
    shares = {}
    print("| preset | setting | multiplies | additions | weight memory | activation memory | total (uJ) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for preset in PRESETS:
        rows, _ = components(preset)
        results[preset] = rows
        for label, row in rows.items():
            total = sum(row.values())
            cells = " | ".join(f"{row[c]:.2f} ({100 * row[c] / total:.0f}%)" for c in ENERGY_COMPONENTS)
            print(f"| {preset} | {label} | {cells} | {total:.2f} |")
        int8 = rows["int8 (exact_s8)"]
        shares[preset] = 100 * int8["energy_multiply_uj"] / sum(int8.values())
    print(f"plot: {plot(results, args.out)}")
    print("multiply share of int8: " + " ".join(f"{p} {s:.1f}%" for p, s in shares.items()))


if __name__ == "__main__":
    main()
