"""``python -m dse.export``: a candidate as a deployment bundle: manifest, ONNX model, assignment.

The candidate is a COMPLETE trial of a study (``study=<name> trial=<number>``) or an assignment file
(``assignment=<yaml>``). Its activation ranges are calibrated as the search calibrated them, so the
exported model is the one the study scored. The bundle (``export.out_dir``) holds:

- ``model.onnx``: the trained model with each layer's arithmetic in QDQ form (:mod:`dse.deployment`);
- ``manifest.json`` (schema beside it): per layer its format or multiplier, scales and zero points, where it
  runs (``onnx``, or ``emulated_only``: decimal places, approximate multipliers), the cost model's figures;
  the accuracy the trial was scored at and on which images; ONNX Runtime's accuracy of the export beside
  dse's on the same held-out images; ONNX Runtime's latency against the float32 export;
- ``assignment.yaml`` (``python -m dse.retrain assignment=`` takes it) and ``layers.csv`` (the cost table).

It is written to a temporary directory and renamed into place, and logged as artifacts of the trial's
MLflow run.
"""

from __future__ import annotations

import datetime
import logging
import math
import platform
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
import yaml
from omegaconf import DictConfig

from dse.candidates.evaluator import CandidateEvaluator
from dse.chosen_candidate import ChosenCandidate, chosen_candidate
from dse.cli import run_command, writable_run_dir
from dse.config_building import build_tracker, build_trained_model, candidate_evaluator, evaluator_on
from dse.config_paths import CONFIG_DIR
from dse.deployment.bundle import check_target, layer_records, write_bundle
from dse.deployment.layer_arithmetic import undeployable_layers
from dse.deployment.onnx_graph import INPUT_NAME, OPSET, candidate_graph
from dse.deployment.runtime import measure_latency, onnx_session, onnx_top1_correct
from dse.study.final_evaluation import held_out_result

__all__ = ["ExportResult", "run_export"]

_logger = logging.getLogger(__name__)
WHY_TOP1_MAY_DIFFER = (
    "ONNX Runtime accumulates integer products exactly in int32 and rescales once (its QLinearConv), with the "
    "bias rounded to the accumulator's scale; dse sums the dequantized products in float32. Where a layer's "
    "output lands within float32 rounding of a quantization step, the next layer sees the neighbouring code. "
    "On x86 CPUs without VNNI, ONNX Runtime's uint8 x int8 kernels add pairs of products in 16 bits, which "
    "saturate (the reason for its quantizer's reduce_range option): there many more images differ, and the "
    "deployed accuracy is that machine's, not dse's."
)


def _images(data_cfg: DictConfig, n: int) -> str:
    """Which images, in words: the data module, its split and how many."""
    split = data_cfg.get("test_split", "all")
    source = data_cfg.get("source") or Path(str(data_cfg.get("path", "?"))).name
    return f"CIFAR-10 test set, split {split} ({source}), {n} images in dse's seeded evaluation order"


def _scored(trial_attrs: dict, prefix: str, data_cfg: DictConfig) -> dict[str, object] | None:
    if f"{prefix}accuracy" not in trial_attrs:
        return None
    n = int(trial_attrs.get(f"{prefix}n_images", 0))
    return {
        "top1": float(trial_attrs[f"{prefix}accuracy"]),
        "low": trial_attrs.get(f"{prefix}accuracy_low"),
        "high": trial_attrs.get(f"{prefix}accuracy_high"),
        "n_images": n,
        "images": _images(data_cfg, n),
    }


@dataclass(frozen=True)
class ExportResult:
    """Where the bundle went, and its manifest."""

    path: Path
    manifest: dict


def _accuracy_check(
    cfg: DictConfig, candidates: CandidateEvaluator, chosen: ChosenCandidate, graph: object
) -> dict[str, object]:
    """dse's emulated top-1 and ONNX Runtime's on the same held-out images (``export.check_images``)."""
    data_cfg = cfg.final_eval.data if cfg.final_eval.enabled else cfg.data
    if not cfg.final_eval.enabled:
        _logger.warning(
            "final_eval.enabled=false: the export is checked on the search set (data), not held-out images."
        )
    held = candidates.on(evaluator_on(cfg, data_cfg))
    n = min(int(cfg.export.check_images or held.evaluator.n_images), held.evaluator.n_images)
    dse_top1, _ = held.evaluator.correct(held.candidate(chosen.assignment), stop=n)
    batches = held.evaluator.labelled_batches(stop=n)
    onnx_top1 = onnx_top1_correct(onnx_session(graph, int(cfg.export.threads)), batches)  # type: ignore[arg-type]
    return {
        "images": _images(data_cfg, n),
        "n_images": n,
        "dse_top1": int(dse_top1.sum()) / n,
        "onnx_runtime_top1": int(onnx_top1.sum()) / n,
        "images_differing": int((dse_top1 != onnx_top1).sum()),
        "why_they_may_differ": WHY_TOP1_MAY_DIFFER,
    }


def run_export(cfg: DictConfig) -> ExportResult:
    """Export the configured candidate as a bundle; return where it went and its manifest."""
    target = Path(str(cfg.export.out_dir or f"deployments/{cfg.study.name}-trial-{cfg.trial}"))
    check_target(target)  # before any work
    model = build_trained_model(cfg.model)
    chosen = chosen_candidate(cfg, model)
    candidates = candidate_evaluator(cfg, model)
    plan = candidates.deployment(chosen.assignment)  # ranges calibrated as the search calibrated them
    float_graph = candidates.float_graph()
    graph = candidate_graph(float_graph, plan)
    check = _accuracy_check(cfg, candidates, chosen, graph)
    table = candidates.cost_table(candidates.model, chosen.assignment)
    costs = candidates.costs(table)
    latency, timed = None, None
    if cfg.export.measure_latency:
        images = candidates.evaluator.labelled_batches(stop=int(max(cfg.export.batch_sizes)))
        timed = measure_latency(
            graph,
            float_graph,
            torch.cat([x for x, _ in images]),
            [int(b) for b in cfg.export.batch_sizes],
            int(cfg.export.repeats),
            int(cfg.export.threads),
        )
        latency = {
            "threads": timed.threads,
            "repeats": timed.repeats,
            "candidate_ms": {str(b): v for b, v in timed.candidate_ms.items()},
            "float32_ms": {str(b): v for b, v in timed.float32_ms.items()},
            "cpu": platform.processor() or platform.machine(),
        }
    attrs = dict(chosen.trial.user_attrs) if chosen.trial else {}
    held = held_out_result(chosen.study, chosen.trial.number) if chosen.study and chosen.trial else {}
    emulated = undeployable_layers(plan)
    manifest = {
        "schema_version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {**chosen.source, "mlflow_run_id": attrs.get("mlflow_run_id")},
        "model": {
            "name": cfg.model.get("name"),
            "builder": str(cfg.model.builder._target_),
            "weights": None if cfg.model.get("weights") is None else str(cfg.model.weights),
            "fold_batchnorm": bool(cfg.model.get("fold_batchnorm", True)),
        },
        "onnx": {
            "file": "model.onnx",
            "opset": OPSET,
            "input": INPUT_NAME,
            "output": "output",
            "runs": (
                "every layer as dse emulates it"
                if not emulated
                else f"every layer as dse emulates it except {len(emulated)} emulated-only layer(s) "
                "(decimal places: the rounded weights in float32, as dse; approximate multipliers: their "
                "integer operands multiplied exactly)"
            ),
        },
        "accuracy": {
            "search": _scored(attrs, "", cfg.data),
            "held_out": _scored(held, "final_", cfg.final_eval.data),
            "export_check": check,
        },
        "cost": {
            "energy_uj": costs["energy_uj"],
            "modeled_latency_us": None if math.isnan(costs["modeled_latency_us"]) else costs["modeled_latency_us"],
            "hardware": str(cfg.hardware.energy.get("name", "?")),
        },
        "latency": latency,
        "layers": layer_records(plan, table),
    }
    assignment = {name: layer.as_dict() for name, layer in chosen.assignment.items()}
    files = {
        "model.onnx": graph.SerializeToString(),
        "assignment.yaml": yaml.safe_dump(
            {k: {f: v for f, v in d.items() if v is not None} for k, d in assignment.items()}
        ).encode(),
        "layers.csv": table.to_csv(index=False).encode(),
    }
    path = write_bundle(target, manifest, files)
    _log_artifacts(cfg, chosen, path)
    timed_text = ""
    if timed is not None and 1 in timed.candidate_ms:
        timed_text = f"; batch 1: {timed.candidate_ms[1]:.2f} ms vs float32 {timed.float32_ms[1]:.2f} ms"
    _logger.info(
        "%s -> %s: ONNX Runtime top-1 %.4f, dse %.4f on %d held-out images (%d differ); %d emulated-only layer(s)%s",
        chosen.label,
        path,
        check["onnx_runtime_top1"],
        check["dse_top1"],
        check["n_images"],
        check["images_differing"],
        len(emulated),
        timed_text,
    )
    return ExportResult(path, manifest)


def _log_artifacts(cfg: DictConfig, chosen: ChosenCandidate, path: Path) -> None:
    """The bundle as artifacts (``deployment/``) of the trial's run, or of a run of its own."""
    tracker = build_tracker(cfg)
    run_id = chosen.tags.get("dse_trial_run_id")
    own = run_id is None
    if own:
        run_id = tracker.start_run(f"export-{chosen.label}", {**chosen.tags, "dse_role": "export"}, {})
    if not run_id:  # tracking=none
        return
    for file in sorted(path.iterdir()):
        tracker.log_file(run_id, file, artifact_path="deployment")
    if own:
        tracker.end_run(run_id)


@writable_run_dir
@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    run_command(run_export, cfg)


if __name__ == "__main__":
    main()
