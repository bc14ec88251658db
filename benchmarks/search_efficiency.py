"""How many evaluations each sampler needs to find the Pareto front, measured against the true front.

The ground truth: MobileNetV2-for-CIFAR (shipped weights), decimal places of the weights for the
four layer types of paper 1 (first conv, expansion, depthwise, projection; last conv and
classifier exact), each in {1, 2, 3, 4, exact}: 5^4 = 625 assignments, every one evaluated on a
fixed stratified 1,000-image subset of the shipped test subset (top-1 accuracy and estimated
energy: deterministic; measured time is noise here and stays out). Each evaluation is cached on
disk (``dse.evaluation_cache``), so the grid is built once, resumes if interrupted, and the
samplers are replayed against it in seconds.

Each sampler runs as dse runs it (the all-exact baseline enqueued first, repeated proposals
pruned and not counted) for several seeds; after each new evaluation the hypervolume of what it
found is divided by the true front's (same reference point as a study: accuracy 0, 1.1 x the
baseline's energy). The table gives the evaluations needed to reach 90%, 95% and 99%
(median and range over seeds); the plot the median curves.

    python benchmarks/search_efficiency.py                # 10 seeds, every sampler
    python benchmarks/search_efficiency.py --quick        # 5 seeds, fewer samplers (a few minutes once cached)
    python benchmarks/search_efficiency.py --build-only   # just (finish) the grid

Last line: ``trials_to_95pct=<median for the default sampler> grid=<size> true_front_pruned=<count>``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tqdm.auto import tqdm

import dse
from dse.assignment import BASELINE_KEY, assignment_key
from dse.candidate import candidate_evaluator
from dse.config_paths import CONFIG_DIR
from dse.evaluation_cache import EvaluationCache, file_digest
from dse.search_spaces import BoundSpace, SearchSpace
from dse.study.replay import OBJECTIVES, cost_to, mark_true_front, replay, trials_to
from dse.study.sampler import build_sampler
from dse.study.screening import ScreeningRule
from dse.tracking.pareto import hypervolume, normalized_points
from dse.training.weights import build_trained_model, resolve_weights
from dse.transform import apply_assignment

GRID = [
    "study=mobilenet_cifar10",
    "space=decimal_places_group",
    "space.decimals=[1,2,3,4]",
    "space.groups=[first_conv,expansion,depthwise,projection]",
    "data.test_subset=1000",
    "evaluation.timing_repeats=1",
]
FRACTIONS = (0.90, 0.95, 0.99)
DEFAULT = "tpe (default)"


def setup(cache_path: Path) -> tuple[BoundSpace, Callable[[dict], dict], int]:
    """The grid's space, a cached evaluation function of its params, and the number of images."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", GRID)
    model = build_trained_model(cfg.model)
    space: SearchSpace = instantiate(cfg.space)
    bound = space.bind(model, dict(cfg.model.layer_groups))
    candidates = candidate_evaluator(cfg, model)
    context = {
        "model": cfg.model.name,
        "weights_sha256": file_digest(resolve_weights(str(cfg.model.weights))),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "evaluation": {k: cfg.evaluation[k] for k in ("calibration_images", "calibration_seed")},
        "emulation": OmegaConf.to_container(cfg.emulation),
        "hardware": OmegaConf.to_container(cfg.hardware, resolve=True),
        "torch": torch.__version__,
        "dse": dse.__version__,
    }
    cache = EvaluationCache(cache_path, context)

    def evaluate(params: dict) -> dict:
        """accuracy, energy_uj and ``correct`` (which images are right, packed bits in hex: screening's replay)."""
        assignment = bound.assignment(params)
        found = cache.get(assignment)
        if found is None:
            mask, _ = candidates.evaluator.correct(apply_assignment(candidates.model, assignment))
            energy = float(candidates.cost_table(candidates.model, assignment)["total_pj"].sum()) / 1e6
            found = {
                "accuracy": float(mask.float().mean()),
                "energy_uj": energy,
                "correct": np.packbits(mask.numpy()).tobytes().hex(),
            }
            cache.put(assignment, found)
        return found

    return bound, evaluate, candidates.evaluator.n_images


def build_grid(bound: BoundSpace, evaluate: Callable[[dict], dict]) -> pd.DataFrame:
    grid = bound.grid()
    names = list(grid)
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]
    rows = []
    for params in tqdm(combos, desc="grid", unit="assignment"):
        rows.append({"key": assignment_key(bound.assignment(params)), **params, **evaluate(params)})
    return pd.DataFrame(rows)


def samplers(
    quick: bool, sampler_cfg: object, bound: BoundSpace, gp: bool = False
) -> dict[str, Callable[[int], optuna.samplers.BaseSampler]]:
    def default(seed: int) -> optuna.samplers.BaseSampler:
        cfg = OmegaConf.merge(sampler_cfg, {"seed": seed})
        return build_sampler(cfg, bound)  # type: ignore[arg-type]

    found: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
        DEFAULT: default,
        "nsga2 (population 20)": lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=20),
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
    }
    if not quick:
        found["tpe (independent)"] = lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=10)
        found["nsga2 (population 8)"] = lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=8)

    if gp:  # Optuna's Gaussian-process sampler: minutes per trial here once it holds a few hundred
        found["gp"] = lambda s: optuna.samplers.GPSampler(seed=s)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="benchmark-cache/search_efficiency.sqlite")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--first-images", type=int, default=250, help="screening: images before deciding")
    parser.add_argument("--out", default="search_efficiency")
    parser.add_argument(
        "--gp", action="store_true", help="also Optuna's GPSampler (slow: its fit grows with the trials)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bound, evaluate, n_images = setup(Path(args.cache))
    table = build_grid(bound, evaluate)
    if args.build_only:
        print(f"grid={len(table)} cached in {args.cache}")
        return
    table["n_images"] = n_images
    base = table[table["key"] == BASELINE_KEY].iloc[0]
    reference = [0.0, 1.1 * float(base["energy_uj"])]
    values = table[["accuracy", "energy_uj"]].to_numpy()
    true_hv = hypervolume(normalized_points(values, OBJECTIVES, reference))
    table["on_true_front"] = mark_true_front(table)
    seeds = args.seeds or (5 if args.quick else 10)
    budget = 200 if args.quick else min(300, len(table))  # every sampler is past 99% well before
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        sampler_cfg = compose("config", GRID).sampler
    makers = samplers(args.quick, sampler_cfg, bound, args.gp)
    rows, curves = [], {}
    for name, make in makers.items():
        runs = [replay(make(seed), bound, table, reference, true_hv, budget) for seed in tqdm(range(seeds), desc=name)]
        curves[name] = [r.fractions for r in runs]
        rows.append(_row(name, seeds, [r.fractions for r in runs]))
    seeded = [
        replay(makers[DEFAULT](s), bound, table, reference, true_hv, budget, seed_uniform=True) for s in range(seeds)
    ]
    rows.append(_row(f"{DEFAULT} + uniform seeds", seeds, [r.fractions for r in seeded]))
    curves[f"{DEFAULT} + uniform seeds"] = [r.fractions for r in seeded]
    result = pd.DataFrame(rows)
    # screening: the default sampler with and without it, in images evaluated (the wall time of a trial
    # is proportional to its images: the search set is evaluated batch by batch)
    rule = ScreeningRule(OBJECTIVES, first_images=args.first_images, alpha=1e-3)
    plain = [replay(makers[DEFAULT](s), bound, table, reference, true_hv, budget) for s in range(seeds)]
    screened = [replay(makers[DEFAULT](s), bound, table, reference, true_hv, budget, rule) for s in range(seeds)]
    cost_plain = [cost_to(r, 0.95) for r in plain]
    cost_screened = [cost_to(r, 0.95) for r in screened]
    pruned_true = sum(r.true_front_pruned for r in screened)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.to_csv(out / "search_efficiency.csv", index=False)
    table.drop(columns=["correct"]).to_csv(out / "grid.csv", index=False)
    _plot(curves, out / "search_efficiency.png", len(table))
    print(f"grid: {len(table)} assignments, true front: {int(table['on_true_front'].sum())} points, HV {true_hv:.4f}")
    print(result.to_string(index=False))
    plain_ok = [c for c in cost_plain if c is not None]
    screened_ok = [c for c in cost_screened if c is not None]
    if len(plain_ok) == seeds and len(screened_ok) == seeds:
        before, after = statistics.median(plain_ok), statistics.median(screened_ok)
        print(
            f"screening ({args.first_images} of {n_images} images, alpha 1e-3), {DEFAULT}: images to 95% median "
            f"{before:.0f} -> {after:.0f} ({before / after:.2f}x less), {sum(r.screened for r in screened)} trials "
            f"screened out over {seeds} seeds, {pruned_true} of them on the true front; images for the whole "
            f"budget of {budget} evaluations: {statistics.median(r.spent for r in plain):.0f} -> "
            f"{statistics.median(r.spent for r in screened):.0f}"
        )
    print(f"wrote {out.resolve()}/search_efficiency.csv, search_efficiency.png, grid.csv")
    median_95 = result.loc[result["sampler"] == DEFAULT, "to 95% (median)"].iloc[0]
    print(f"trials_to_95pct={median_95} grid={len(table)} true_front_pruned={pruned_true}")


def _row(name: str, seeds: int, histories: list[list[float]]) -> dict[str, object]:
    row: dict[str, object] = {"sampler": name, "seeds": seeds}
    for f in FRACTIONS:
        needed = [trials_to(h, f) for h in histories]
        reached = [n for n in needed if n is not None]
        row[f"to {f:.0%} (median)"] = statistics.median(reached) if len(reached) == len(needed) else None
        row[f"to {f:.0%} (min-max)"] = f"{min(reached)}-{max(reached)}" if reached else "-"
    return row


def _plot(curves: dict[str, list[list[float]]], path: Path, grid: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, histories in curves.items():
        n = min(len(h) for h in histories)
        median = np.median(np.array([h[:n] for h in histories]), axis=0)
        ax.plot(np.arange(1, n + 1), 100 * median, label=name)
    for f in FRACTIONS:
        ax.axhline(100 * f, c="0.8", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel(f"distinct evaluations (of {grid})")
    ax.set_ylabel("hypervolume, % of the true front's (median over seeds)")
    ax.set_ylim(50, 100.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
