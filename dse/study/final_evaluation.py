"""Re-evaluating the final Pareto front on held-out images, once per trial: each point's accuracy with its
95% interval, and its difference from the exact model on the same images with McNemar's exact test."""

from __future__ import annotations

import logging
from collections.abc import Callable

import optuna
import pandas as pd
import torch
from tqdm.auto import tqdm

from dse.candidates.accuracy_statistics import accuracy_interval, paired_difference
from dse.candidates.evaluation import Evaluator
from dse.candidates.evaluator import CandidateEvaluator
from dse.exceptions import DataError
from dse.search_spaces import BoundSpace
from dse.tracking.summary import interval_text
from dse.tracking.tracker import Tracker

__all__ = ["final_evaluation", "held_out_result", "held_out_results"]

_logger = logging.getLogger(__name__)

_ATTR = "final_eval/"  # study user attribute per front point: "final_eval/<trial number>"
_EXACT_ATTR = "final_eval_exact"  # the exact model's held-out accuracy and interval


def held_out_result(study: optuna.Study, number: int) -> dict[str, float]:
    """The held-out result of trial ``number`` stored by :func:`final_evaluation`, or {} if it has none."""
    return dict(study.user_attrs.get(f"{_ATTR}{number}", {}))


def held_out_results(study: optuna.Study) -> dict[int, dict[str, float]]:
    """Every stored held-out result of ``study``, by trial number."""
    return {int(k[len(_ATTR) :]): v for k, v in study.user_attrs.items() if k.startswith(_ATTR)}


HOW_TO_GET_THE_TEST_SET = (
    "the default downloads CIFAR-10 with torchvision into ~/.cache/dse/cifar10 (set DSE_CIFAR10_ROOT for "
    "another folder); an .npz of your own: data@final_eval.data=cifar10_npz final_eval.data.path=/path/cifar10.npz; "
    "skip it: final_eval.enabled=false"
)


def final_evaluation(
    study: optuna.Study,
    space: BoundSpace,
    search: CandidateEvaluator,
    held_out: Callable[[], Evaluator],
    tracker: Tracker,
) -> pd.DataFrame | None:
    """Accuracy of every Pareto trial on the held-out images (kept in study attrs: never redone).

    Quantized layers keep the activation ranges calibrated for the search, so the
    re-evaluated model is the very one the search scored. When the data cannot be
    had, the reason and the ways to get it are logged and None is returned.
    """
    try:
        full = held_out()
    except DataError as exc:
        _logger.warning(
            "Skipped the held-out re-evaluation of the front: %s\nTo get the test set: %s.",
            exc,
            HOW_TO_GET_THE_TEST_SET,
        )
        return None
    candidates = search.on(full)  # the search's activation ranges: never re-calibrated on these images
    exact: torch.Tensor | None = None  # the exact model's per-image correctness: the paired baseline
    rows = []
    for trial in tqdm(study.best_trials, desc="front on the held-out images", unit="point"):
        attr = f"{_ATTR}{trial.number}"
        result = study.user_attrs.get(attr)
        if result is None:
            if exact is None:
                exact = full.correct(search.model)[0]
            top1, top5 = full.correct(candidates.candidate(space.assignment(trial.params)))
            interval, paired = accuracy_interval(top1), paired_difference(top1, exact)
            result = {
                "final_accuracy": interval.accuracy,
                "final_accuracy_low": interval.low,  # 95% Wilson interval
                "final_accuracy_high": interval.high,
                "final_accuracy_top5": int(top5.sum()) / len(top5),
                "final_n_images": interval.n_images,
                "final_vs_exact_points": 100 * paired.difference,  # on the same images
                "final_vs_exact_mcnemar_p": paired.p_value,
            }
            study.set_user_attr(attr, result)
            run_id = trial.user_attrs.get("mlflow_run_id")
            if run_id:  # (a trial of a study run without tracking has none)
                tracker.log_metrics(run_id, result)
        searched = {  # beside it: what the search saw, on its own images
            "search_accuracy": trial.user_attrs.get("accuracy"),
            "search_accuracy_low": trial.user_attrs.get("accuracy_low"),
            "search_accuracy_high": trial.user_attrs.get("accuracy_high"),
            "search_n_images": trial.user_attrs.get("n_images"),
        }
        rows.append({"trial": trial.number, **searched, **result})
    table = pd.DataFrame(rows)
    exact_result = study.user_attrs.get(_EXACT_ATTR)
    if exact_result is None:  # the exact model on the same images: the row every front point is read against
        interval = accuracy_interval(exact if exact is not None else full.correct(search.model)[0])
        exact_result = {"final_accuracy": interval.accuracy, "final_accuracy_low": interval.low}
        exact_result |= {"final_accuracy_high": interval.high, "final_n_images": interval.n_images}
        study.set_user_attr(_EXACT_ATTR, exact_result)
    _logger.info(
        "Pareto front on %d held-out images (none of them scored a candidate):\n%s",
        full.n_images,
        _readable(table, exact_result).to_string(index=False),
    )
    return table


def _readable(table: pd.DataFrame, exact: dict[str, float]) -> pd.DataFrame:
    """The closing table: one format per column, intervals beside accuracies, the exact model's row first."""

    def accuracy(value: float, low: float, high: float, n: float) -> str:
        return f"{100 * value:.2f} {interval_text(low, high, n)}" if value is not None else ""

    rows = [{"trial": "exact", "search top-1 %": "", "held-out top-1 %": accuracy(*_final(exact))}]
    rows[0] |= {"vs exact (points)": "", "McNemar p": ""}
    for r in table.to_dict("records"):
        search = (r["search_accuracy"], r["search_accuracy_low"], r["search_accuracy_high"], r["search_n_images"])
        rows.append(
            {
                "trial": str(r["trial"]),
                "search top-1 %": accuracy(*search),
                "held-out top-1 %": accuracy(*_final(r)),
                "vs exact (points)": f"{r['final_vs_exact_points']:+.2f}",
                "McNemar p": f"{r['final_vs_exact_mcnemar_p']:.2g}",
            }
        )
    return pd.DataFrame(rows)


def _final(result: dict[str, float]) -> tuple[float, float, float, float]:
    keys = ("final_accuracy", "final_accuracy_low", "final_accuracy_high", "final_n_images")
    return tuple(result[k] for k in keys)  # type: ignore[return-value]
