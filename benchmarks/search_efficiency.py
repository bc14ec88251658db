"""How many evaluations each sampler needs to find the Pareto front, measured against the true front.

The ground truth: MobileNetV2-for-CIFAR (shipped weights), decimal places of the weights for the
four layer types of paper 1 (first conv, expansion, depthwise, projection; last conv and
classifier exact), each in {1, 2, 3, 4, exact}: 5^4 = 625 assignments, every one evaluated on a
fixed stratified 1,000-image subset of the shipped test subset (top-1 accuracy and estimated
energy: deterministic; measured time is noise here and stays out). Each evaluation is cached on
disk (``dse.candidates.evaluation_cache``), so the grid is built once, resumes if interrupted, and the
samplers are replayed against it in seconds.

Each sampler runs as dse runs it (the all-exact baseline enqueued first, repeated proposals
pruned and not counted) for several seeds; after each new evaluation the hypervolume of what it
found is divided by the true front's (same reference point as a study: accuracy 0, 1.1 x the
baseline's energy). The table gives the evaluations needed to reach 90%, 95% and 99%
(median and range over seeds); the plot the median curves.

Screening (``dse.study.screening``) is replayed too, with its ceiling: an oracle that stops, for
free, every trial the front dominates at its final accuracy.

``--per-layer`` measures instead a space too large to enumerate: each of the 53 conv/linear
layers on one of three approximate multipliers or float32 (4^53), 500 images. Each sampler runs
at fixed budgets (25, 50, 100 evaluations; 5 seeds) against the best front known: that of a
long reference run (the default sampler, another seed, 300 evaluations) joined with every
compared run's points. Evaluations are cached too (two worker processes, one thread each).

    python benchmarks/search_efficiency.py                # 10 seeds, every sampler
    python benchmarks/search_efficiency.py --gp           # and Optuna's GP sampler (3 seeds, 40 trials)
    python benchmarks/search_efficiency.py --quick        # 5 seeds, fewer samplers (a few minutes once cached)
    python benchmarks/search_efficiency.py --build-only   # just (finish) the grid
    python benchmarks/search_efficiency.py --per-layer    # the per-layer space (about 80 min on 2 cores, then cached)

Last line: ``trials_to_95pct=<median for the default sampler> grid=<size> true_front_pruned=<count>``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import multiprocessing
import statistics
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

import dse
from dse.assignment import BASELINE_KEY, assignment_key
from dse.candidates.evaluation_cache import EvaluationCache, file_digest
from dse.config_building import build_sampler, build_trained_model, candidate_evaluator
from dse.config_paths import CONFIG_DIR
from dse.search_spaces import BoundSpace, SearchSpace
from dse.study.replay import (
    OBJECTIVES,
    ORACLE,
    cost_to,
    hypervolume_history,
    mark_true_front,
    replay,
    trials_to,
    unpack_correct,
)
from dse.study.screening import ScreeningRule
from dse.tracking.pareto import hypervolume, non_dominated, normalized_points
from dse.training.weights import resolve_weights

GRID = [
    "study=mobilenet_cifar10",
    "space=decimal_places_group",
    "space.decimals=[1,2,3,4]",
    "space.groups=[first_conv,expansion,depthwise,projection]",
    "data.test_subset=1000",
    "evaluation.timing_repeats=1",
]
# too large to enumerate: each of MobileNetV2's 53 conv/linear layers on one of three approximate
# multipliers (EvoApprox, mild and aggressive; Mitch-w6) or float32: 4^53 assignments
PER_LAYER = [
    "study=mobilenet_cifar10_multipliers",
    "space.granularity=layer",
    "space.multipliers=[mul8s_1KV9,mul8s_1L2J,mitchell_w6_s8]",
    "data.test_subset=500",
    "evaluation.timing_repeats=1",
]
PER_LAYER_BUDGETS = (25, 50, 100)
REFERENCE_SEED = 1000  # the long reference run: the default sampler with a seed no compared run uses
FRACTIONS = (0.90, 0.95, 0.99)
GP_BUDGET, GP_SEEDS = 40, 3  # --gp: Optuna's GPSampler proposes in seconds, not milliseconds, here
DEFAULT = "tpe (default)"
_WORKER: dict[str, object] = {}  # a per-layer worker process's space, evaluation and samplers


def setup(cache_path: Path, overrides: list[str] = GRID) -> tuple[BoundSpace, Callable[[dict], dict], int, DictConfig]:
    """The space, a cached evaluation function of its params, the number of images and the sampler's config."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides)
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
    order, n_images = candidates.evaluator.image_order, candidates.evaluator.n_images

    def evaluate(params: dict) -> dict:
        """accuracy, energy_uj and ``correct`` (which images are right, packed bits in hex: screening's replay)."""
        assignment = bound.assignment(params)
        found = cache.get(assignment)
        if found is None:
            mask, _ = candidates.evaluator.correct(candidates.candidate(assignment))
            in_data_order = mask[torch.argsort(order)]
            energy = float(candidates.cost_table(candidates.model, assignment)["total_pj"].sum()) / 1e6
            found = {
                "accuracy": float(mask.float().mean()),
                "energy_uj": energy,
                "correct": np.packbits(in_data_order.numpy()).tobytes().hex(),  # kept in data set order
            }
            cache.put(assignment, found)
        mask = unpack_correct(found["correct"], n_images)[order.numpy()]  # the search's evaluation order
        return {**found, "correct": np.packbits(mask).tobytes().hex()}

    return bound, evaluate, n_images, cfg.sampler


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
        return build_sampler(cfg, bound)

    found: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
        DEFAULT: default,
        "nsga2 (population 20)": lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=20),
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
    }
    if not quick:
        found["tpe (independent)"] = lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=10)
        found["nsga2 (population 8)"] = lambda s: optuna.samplers.NSGAIISampler(seed=s, population_size=8)

    if gp:  # Optuna's Gaussian-process sampler: about 7 s per proposal here, so a short budget (GP_BUDGET)
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
        "--gp", action="store_true", help=f"also Optuna's GPSampler ({GP_SEEDS} seeds, {GP_BUDGET} trials: it is slow)"
    )
    parser.add_argument(
        "--per-layer",
        action="store_true",
        help="the per-layer multiplier space (4^53) at fixed budgets against a long reference run, instead of the grid",
    )
    parser.add_argument("--reference-budget", type=int, default=300, help="--per-layer: the reference run's trials")
    parser.add_argument("--jobs", type=int, default=2, help="--per-layer: worker processes (one thread each)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.per_layer:
        per_layer(args)
        return
    bound, evaluate, n_images, sampler_cfg = setup(Path(args.cache))
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
    makers = samplers(args.quick, sampler_cfg, bound, args.gp)
    rows, curves = [], {}
    for name, make in makers.items():
        n_seeds, n_trials = (min(seeds, GP_SEEDS), GP_BUDGET) if name == "gp" else (seeds, budget)
        runs = [replay(make(s), bound, table, reference, true_hv, n_trials) for s in tqdm(range(n_seeds), desc=name)]
        curves[name] = [r.fractions for r in runs]
        rows.append(_row(name if name != "gp" else f"gp (first {GP_BUDGET})", n_seeds, [r.fractions for r in runs]))
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
    oracle = [replay(makers[DEFAULT](s), bound, table, reference, true_hv, budget, ORACLE) for s in range(seeds)]
    cost_plain = [cost_to(r, 0.95) for r in plain]
    cost_screened = [cost_to(r, 0.95) for r in screened]
    cost_oracle = [cost_to(r, 0.95) for r in oracle]
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
    if len(plain_ok) == seeds and len(screened_ok) == seeds and None not in cost_oracle:
        before, after = statistics.median(plain_ok), statistics.median(screened_ok)
        ceiling = statistics.median(c for c in cost_oracle if c is not None)
        pd.DataFrame(
            [
                {
                    "sampler": DEFAULT,
                    "first_images": args.first_images,
                    "images": n_images,
                    "alpha": 1e-3,
                    "seeds": seeds,
                    "budget": budget,
                    "images_to_95_plain": before,
                    "images_to_95_screened": after,
                    "images_to_95_oracle": ceiling,
                    "trials_screened": sum(r.screened for r in screened),
                    "true_front_pruned": pruned_true,
                    "budget_images_plain": statistics.median(r.spent for r in plain),
                    "budget_images_screened": statistics.median(r.spent for r in screened),
                }
            ]
        ).to_csv(out / "screening.csv", index=False)
        print(
            f"screening ({args.first_images} of {n_images} images, alpha 1e-3), {DEFAULT}: images to 95% median "
            f"{before:.0f} -> {after:.0f} ({before / after:.2f}x less), {sum(r.screened for r in screened)} trials "
            f"screened out over {seeds} seeds, {pruned_true} of them on the true front; images for the whole "
            f"budget of {budget} evaluations: {statistics.median(r.spent for r in plain):.0f} -> "
            f"{statistics.median(r.spent for r in screened):.0f}. Ceiling of any screening that stops dominated "
            f"trials (an oracle that knows each trial's final accuracy and stops it for free): {before:.0f} -> "
            f"{ceiling:.0f} ({before / ceiling:.2f}x less)"
        )
    print(f"wrote {out.resolve()}/search_efficiency.csv, screening.csv, search_efficiency.png, grid.csv")
    median_95 = result.loc[result["sampler"] == DEFAULT, "to 95% (median)"].iloc[0]
    print(f"trials_to_95pct={median_95} grid={len(table)} true_front_pruned={pruned_true}")


def per_layer(args: argparse.Namespace) -> None:
    """Samplers at fixed budgets on a space too large to enumerate, against the best front known: that
    of a long reference run (the default sampler, another seed) joined with every compared run's points."""
    cache = Path(args.cache).with_name("search_efficiency_per_layer.sqlite")
    seeds = args.seeds or (3 if args.quick else 5)
    budget = max(PER_LAYER_BUDGETS)
    bound, evaluate, n_images, _ = setup(cache, PER_LAYER)
    base_energy = float(evaluate(bound.baseline_params())["energy_uj"])
    reference = [0.0, 1.1 * base_energy]
    names = [DEFAULT, "nsga2 (population 20)", "random"]
    jobs = [("reference", REFERENCE_SEED, args.reference_budget, reference)]
    jobs += [(name, seed, budget, reference) for name in names for seed in range(seeds)]
    context = multiprocessing.get_context("spawn")  # torch in forked workers can deadlock
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_start_worker, initargs=(str(cache),)) as pool:
        points = list(tqdm(pool.map(_per_layer_run, jobs), total=len(jobs), desc="per-layer runs"))
    everything = np.array([p for run in points for p in run])
    front_hv = hypervolume(normalized_points(everything, OBJECTIVES, reference))
    on_front = non_dominated(everything[:, 0], everything[:, 1])
    front = np.unique(everything[on_front], axis=0)
    from_reference = len(np.unique(everything[: len(points[0])][on_front[: len(points[0])]], axis=0))
    rows, curves = [], {}
    for name in names:
        mine = [p for job, p in zip(jobs, points, strict=True) if job[0] == name]
        runs = [hypervolume_history(p, reference, front_hv) for p in mine]
        curves[name] = runs
        row: dict[str, object] = {"sampler": name, "seeds": len(runs)}
        for b in PER_LAYER_BUDGETS:
            at = [100 * h[min(b, len(h)) - 1] for h in runs]
            row[f"HV% at {b} (median)"] = round(statistics.median(at), 1)
            row[f"HV% at {b} (min-max)"] = f"{min(at):.1f}-{max(at):.1f}"
        rows.append(row)
    reference_run = hypervolume_history(points[0], reference, front_hv)
    curves[f"reference run ({args.reference_budget} trials)"] = [reference_run]
    result = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.to_csv(out / "per_layer.csv", index=False)
    pd.DataFrame(front, columns=["accuracy", "energy_uj"]).to_csv(out / "per_layer_front.csv", index=False)
    _plot(curves, out / "per_layer.png", None)
    print(
        f"per-layer space: {bound.size:.3g} assignments ({len(bound.grid())} layers x 4 choices), "
        f"{len(everything)} evaluations on {n_images} images; best "
        f"front known: {len(front)} points ({from_reference} from the reference run, which reached "
        f"{100 * reference_run[-1]:.1f}% of its hypervolume)"
    )
    print(result.to_string(index=False))
    print(f"wrote {out.resolve()}/per_layer.csv, per_layer_front.csv, per_layer.png")


def _start_worker(cache: str) -> None:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bound, evaluate, n_images, sampler_cfg = setup(Path(cache), PER_LAYER)
    makers = samplers(True, sampler_cfg, bound)
    makers["reference"] = makers[DEFAULT]
    _WORKER.update(bound=bound, evaluate=evaluate, n_images=n_images, makers=makers)


def _per_layer_run(job: tuple[str, int, int, list[float]]) -> list[tuple[float, float]]:
    """(accuracy, energy) of each distinct evaluation of one sampler run, in order."""
    name, seed, budget, reference = job
    evaluate, n_images = _WORKER["evaluate"], _WORKER["n_images"]

    def lookup(key: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**evaluate(dict(params)), "n_images": n_images}  # type: ignore[operator]

    make = _WORKER["makers"][name]  # type: ignore[index]
    return replay(make(seed), _WORKER["bound"], lookup, reference, 1.0, budget).points


def _row(name: str, seeds: int, histories: list[list[float]]) -> dict[str, object]:
    row: dict[str, object] = {"sampler": name, "seeds": seeds}
    for f in FRACTIONS:
        needed = [trials_to(h, f) for h in histories]
        reached = [n for n in needed if n is not None]
        row[f"to {f:.0%} (median)"] = statistics.median(reached) if len(reached) == len(needed) else None
        row[f"to {f:.0%} (min-max)"] = f"{min(reached)}-{max(reached)}" if reached else "-"
    return row


def _plot(curves: dict[str, list[list[float]]], path: Path, grid: int | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    # the default sampler last and thickest, so no other curve hides it; each with its seeds' spread
    order = sorted(curves, key=lambda name: "(default)" in name and "+" not in name)
    for name in order:
        histories = curves[name]
        n = min(len(h) for h in histories)
        runs = 100 * np.array([h[:n] for h in histories])
        x = np.arange(1, n + 1)
        default = "(default)" in name and "+" not in name
        (line,) = ax.plot(
            x, np.median(runs, axis=0), label=name, lw=2.4 if default else 1.2, zorder=3 if default else 2
        )
        ax.fill_between(x, *np.percentile(runs, [25, 75], axis=0), color=line.get_color(), alpha=0.15, lw=0)
    for f in FRACTIONS:
        ax.axhline(100 * f, c="0.8", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel(f"distinct evaluations (of {grid})" if grid else "distinct evaluations")
    whose = "the true front's" if grid else "the best front known"
    ax.set_ylabel(f"hypervolume, % of {whose}")
    ax.set_title("median (line) and interquartile range (band) over seeds", fontsize=9)
    lowest = min(float(np.median([h[0] for h in histories])) for histories in curves.values())
    ax.set_ylim(min(50.0, 100 * lowest - 5), 100.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
