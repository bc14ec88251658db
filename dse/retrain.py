"""``python -m dse.retrain``: retrain a candidate with its approximation in the forward pass.

The candidate is a COMPLETE trial of a study (``study=<name> trial=<number>``, read from the
study's storage) or an assignment file (``assignment=<yaml>``). Activation ranges are
calibrated as the search calibrated them, so "before" is the trial's own model. The
retrained weights, learning curves and before/after accuracy go to an MLflow run tagged
with the study and trial; checkpoints under ``retrain.ckpt_dir`` make a re-run resume.
The shipped (or configured) baseline weights are never written.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from dse.assignment import assignment_key
from dse.candidates.retraining import RetrainResult, retrain_candidate
from dse.chosen_candidate import chosen_candidate, load_assignment
from dse.cli import run_command, writable_run_dir
from dse.config_building import build_tracker, build_trained_model, candidate_evaluator, retrain_settings
from dse.config_paths import CONFIG_DIR

__all__ = ["RetrainResult", "load_assignment", "run_retrain"]

_logger = logging.getLogger(__name__)


def run_retrain(cfg: DictConfig) -> RetrainResult:
    """Retrain the configured candidate; return its accuracy before and after."""
    model = build_trained_model(cfg.model)
    chosen = chosen_candidate(cfg, model)
    settings = retrain_settings(cfg)
    result = retrain_candidate(
        model,
        chosen.assignment,
        candidate_evaluator(cfg, model),
        settings,
        chosen.label,
        build_tracker(cfg),
        chosen.tags,
    )
    _logger.info("%s (%s): weights %s", chosen.label, assignment_key(chosen.assignment)[:80], result.weights)
    return result


@writable_run_dir
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="retrain")
def main(cfg: DictConfig) -> None:
    run_command(run_retrain, cfg)


if __name__ == "__main__":
    main()
