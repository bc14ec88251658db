"""The evaluation cache and the per-image correctness behind the search-efficiency ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dse.assignment import LayerConfig
from dse.candidates.evaluation_cache import EvaluationCache
from dse.config_building import build_trained_model, candidate_evaluator
from tests.conftest import FAST, compose_config


def test_cached_results_equal_a_fresh_evaluation_and_a_new_context_misses(tmp_path: Path) -> None:
    cfg = compose_config(["study=quickstart", *FAST])
    model = build_trained_model(cfg.model)
    candidates = candidate_evaluator(cfg, model)
    assignment = {"features.2.0": LayerConfig(decimals=1), "features.4.0": LayerConfig(decimals=1)}
    fresh = candidates.evaluate(assignment, timing=False).metrics
    correct, top5 = candidates.evaluator.correct(candidates.candidate(assignment))
    assert len(correct) == candidates.evaluator.n_images == 200
    assert float(correct.float().mean()) == pytest.approx(fresh["accuracy"], abs=1e-6)  # the Trainer's number
    assert float(top5.float().mean()) == pytest.approx(fresh["accuracy_top5"], abs=1e-6)
    first, _ = candidates.evaluator.correct(candidates.candidate(assignment), stop=50)
    rest, _ = candidates.evaluator.correct(candidates.candidate(assignment), start=50)
    assert first.tolist() + rest.tolist() == correct.tolist()

    context = {"model": cfg.model.name, "images": 200}
    cache = EvaluationCache(tmp_path / "cache.sqlite", context)
    assert cache.get(assignment) is None
    stored = {
        "accuracy": fresh["accuracy"],
        "energy_uj": fresh["energy_uj"],
        "correct": np.packbits(correct).tobytes().hex(),
    }
    cache.put(assignment, stored)
    again = EvaluationCache(tmp_path / "cache.sqlite", context)  # another process, later
    assert again.get(assignment) == stored and len(again) == 1
    unpacked = np.unpackbits(np.frombuffer(bytes.fromhex(again.get(assignment)["correct"]), np.uint8))[:200]  # type: ignore[index]
    assert unpacked.astype(bool).tolist() == correct.tolist()
    assert EvaluationCache(tmp_path / "cache.sqlite", {**context, "images": 1000}).get(assignment) is None
    assert again.get({"features.2.0": LayerConfig(decimals=2)}) is None


def test_the_first_images_evaluated_are_a_random_sample_of_a_class_major_set() -> None:
    """Screening bounds the whole set's accuracy from the first images: they must not be a few classes."""
    cfg = compose_config(["study=quickstart", "data.test_subset=1000"])
    candidates = candidate_evaluator(cfg, build_trained_model(cfg.model))
    evaluator = candidates.evaluator
    labels = evaluator.datamodule.test_dataloader().dataset.tensors[1]  # data set order: class-major
    assert labels[:100].unique().tolist() == [0]  # what a prefix of the files would give
    order = evaluator.image_order
    assert sorted(order.tolist()) == list(range(1000))
    first = labels[order[:100]]
    assert len(first.unique()) == 10 and first.bincount().max() <= 25
    # the same images, the same number right: only the order changed (the calibration images too)
    correct, _ = evaluator.correct(candidates.model)
    unshuffled = candidate_evaluator(
        compose_config(["study=quickstart", "data.test_subset=1000", "evaluation.order_seed=null"]),
        build_trained_model(cfg.model),
    )
    plain, _ = unshuffled.evaluator.correct(unshuffled.model)
    assert unshuffled.evaluator.image_order.tolist() == list(range(1000))
    assert plain[order].tolist() == correct.tolist()
    assert [b.tolist() for b in unshuffled.evaluator.calibration_batches()] == [
        b.tolist() for b in evaluator.calibration_batches()
    ]
