"""The evaluation cache and the per-image correctness behind the search-efficiency ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dse.assignment import LayerConfig
from dse.candidate import candidate_evaluator
from dse.evaluation_cache import EvaluationCache
from dse.training.weights import build_trained_model
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
