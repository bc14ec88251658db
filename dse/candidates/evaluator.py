"""One candidate: apply an assignment to the trained model, then measure and estimate it."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import onnx
import pandas as pd
import torch
from torch import nn

from dse.assignment import Assignment, LayerConfig, needs_activation_ranges
from dse.candidates.accuracy_statistics import accuracy_interval
from dse.candidates.evaluation import Evaluator
from dse.candidates.transform import apply_assignment
from dse.cost.energy import EnergyModel
from dse.cost.latency import LatencyModel
from dse.cost.macs import LayerShape, layer_shapes, unemulated_shapes, warn_unemulated
from dse.deployment.layer_arithmetic import LayerDeployment, deployment_plan, undeployable_layers
from dse.deployment.onnx_graph import candidate_graph, export_float_graph
from dse.deployment.runtime import DeployedLatency, DeployedTiming, measure_latency
from dse.emulation import EmulationPath, bounded_state_ranges, calibrate_ranges
from dse.exceptions import ConfigError

__all__ = ["ENERGY_COMPONENTS", "CandidateEvaluator", "CandidateResult", "PartialEvaluation"]

# Each trial's energy by component (metric -> column of the cost table); they add up to energy_uj.
ENERGY_COMPONENTS = {
    "energy_multiply_uj": "multiply_pj",
    "energy_accumulate_uj": "add_pj",
    "energy_weight_memory_uj": "weight_memory_pj",
    "energy_activation_memory_uj": "activation_memory_pj",
}


@dataclass(frozen=True)
class PartialEvaluation:
    """A candidate evaluated on its first images (screening): the model and per-image correctness."""

    model: nn.Module
    top1: torch.Tensor
    top5: torch.Tensor


@dataclass(frozen=True)
class CandidateResult:
    """Every metric of ``dse.objectives.TRIAL_METRICS``, and the per-layer cost table."""

    metrics: dict[str, float]
    layers: pd.DataFrame


class CandidateEvaluator:
    """Evaluate assignments of one trained model on one evaluator and energy model.

    Args:
        model: the trained exact model (never modified: candidates are copies).
        evaluator: accuracy and timing on one data set.
        energy_model, latency_model: the cost models.
        activation_ranges: calibrated input ranges of quantized layers, or a function that gives them
            (another evaluator's, :meth:`on`); None = measured on this evaluator's images on first use.
        emulation_path, per_channel: how layers on a multiplier are emulated
            (:func:`dse.candidates.transform.apply_assignment`).

    Measured time (``evaluator.relative_timing``): (candidate / exact model, interleaved passes) x the
    exact model's own time ``reference_time_s`` (its fastest pass, measured once per study and kept
    in the study), so a shared machine's load cancels out (:meth:`Evaluator.relative_time`).
    """

    def __init__(
        self,
        model: nn.Module,
        evaluator: Evaluator,
        energy_model: EnergyModel,
        activation_ranges: dict[str, tuple[float, float]] | Callable[[], dict[str, tuple[float, float]]] | None = None,
        latency_model: LatencyModel | None = None,
        emulation_path: EmulationPath = "auto",
        per_channel: bool = True,
        deployed_timing: DeployedTiming | None = None,
    ) -> None:
        self.model = model.eval()
        self.deployed_timing = deployed_timing or DeployedTiming()
        self._float_graph: onnx.ModelProto | None = None
        self.reference_time_s: float | None = None  # the exact model's pass time; the study keeps one
        self._timing_reference: nn.Module | None = None
        self.emulation_path: EmulationPath = emulation_path
        self.per_channel = per_channel
        self.evaluator = evaluator
        self.energy_model = energy_model
        self.latency_model = latency_model
        # priced per input of the data module's ``input_shape`` (a sequence: its typical length), else one image
        input_shape = tuple(getattr(evaluator.datamodule, "input_shape", (3, 32, 32)))
        self.shapes: Mapping[str, LayerShape] = layer_shapes(model, input_shape)
        # float32 in every candidate, and priced so: a GRU holding most MACs must not vanish from the costs
        self.unemulated: Mapping[str, LayerShape] = unemulated_shapes(model, input_shape)
        warn_unemulated(self.shapes, self.unemulated)
        self._ranges = activation_ranges  # None: measured on first use

    def on(self, evaluator: Evaluator) -> CandidateEvaluator:
        """The same candidates measured on ``evaluator``'s images (a held-out set): the same model, cost
        models and emulation, and *these* activation ranges, so the model measured is the one chosen here.
        Ranges are calibrated (on this evaluator's calibration images) only if a candidate needs them."""
        return CandidateEvaluator(
            self.model,
            evaluator,
            self.energy_model,
            activation_ranges=lambda: self.activation_ranges,
            latency_model=self.latency_model,
            emulation_path=self.emulation_path,
            per_channel=self.per_channel,
            deployed_timing=self.deployed_timing,
        )

    @property
    def activation_ranges(self) -> dict[str, tuple[float, float]]:
        """Input range of every Conv2d/Linear of the exact model, measured once."""
        if callable(self._ranges):
            self._ranges = self._ranges()
        if self._ranges is None:
            model = self.model.to(self.evaluator.device)
            self._ranges = calibrate_ranges(model, self.evaluator.calibration_batches(), list(self.shapes))
            self._ranges.update(bounded_state_ranges(model))  # a recurrent state's tanh bound, where exact
            self.model = model.cpu()
        return self._ranges

    def cost_table(self, model: nn.Module, assignment: Assignment) -> pd.DataFrame:
        shapes = {**self.shapes, **self.unemulated}
        energies = self.energy_model.estimate(model, shapes, assignment)
        latencies = (
            self.latency_model.estimate(shapes, energies, assignment)
            if self.latency_model
            else {n: math.nan for n in shapes}
        )
        rows = []
        for name, shape in shapes.items():
            e = energies[name]
            rows.append(
                {
                    "layer": name,
                    "kind": shape.kind,
                    "macs": shape.macs,
                    "weights": shape.weight_numel,
                    "decimals": assignment.get(name, LayerConfig()).decimals,
                    "multiplier": assignment.get(name, LayerConfig()).multiplier,
                    "weight_format": assignment.get(name, LayerConfig()).weight_format,
                    "activation_format": assignment.get(name, LayerConfig()).activation_format,
                    "activation_bits": e.activation_bits,
                    "latency_us": latencies[name] * 1e6,
                    "weight_bits": e.weight_bits,
                    "multiply_pj": e.multiply_pj,
                    "add_pj": e.add_pj,
                    "weight_memory_pj": e.weight_memory_pj,
                    "activation_memory_pj": e.activation_memory_pj,
                    "total_pj": e.total_pj,
                }
            )
        return pd.DataFrame(rows)

    def candidate(self, assignment: Assignment) -> nn.Module:
        """The trained model with ``assignment`` applied (a copy)."""
        return apply_assignment(
            self.model,
            assignment,
            self.activation_ranges if needs_activation_ranges(assignment) else None,
            path=self.emulation_path,
            per_channel=self.per_channel,
        )

    @staticmethod
    def costs(table: pd.DataFrame) -> dict[str, float]:
        """The cost model's metrics of a :meth:`cost_table` (known before any image is evaluated)."""
        macs = table["macs"].sum()
        parts = {name: float(table[column].sum()) / 1e6 for name, column in ENERGY_COMPONENTS.items()}
        return {
            "energy_uj": float(table["total_pj"].sum()) / 1e6,
            **parts,
            "energy_compute_uj": parts["energy_multiply_uj"] + parts["energy_accumulate_uj"],
            "mean_weight_bits": float((table["weight_bits"] * table["macs"]).sum() / macs),
            "modeled_latency_us": float(table["latency_us"].sum()),
        }

    def first_images(self, assignment: Assignment, n: int) -> PartialEvaluation:
        """``assignment`` evaluated on its first ``n`` images (of the evaluation order: a random sample), for a
        decision to stop there (:mod:`dse.study.screening`); :meth:`evaluate` finishes the rest without redoing them."""
        candidate = self.candidate(assignment)
        top1, top5 = self.evaluator.correct(candidate, stop=n)
        return PartialEvaluation(candidate, top1, top5)

    def evaluate(
        self,
        assignment: Assignment,
        timing: bool = True,
        partial: PartialEvaluation | None = None,
        deployed: bool = False,
    ) -> CandidateResult:
        """Every metric of ``assignment``; ``partial``: its first images already evaluated (:meth:`first_images`);
        ``deployed``: its ONNX export timed on ONNX Runtime too (:meth:`deployed_latency`)."""
        if partial is None:
            candidate = self.candidate(assignment)
            top1, top5 = self.evaluator.correct(candidate)
        else:  # the remaining images only: the same forward, each image once
            candidate = partial.model
            top1, top5 = self.evaluator.correct(candidate, start=len(partial.top1))
            top1, top5 = torch.cat([partial.top1, top1]), torch.cat([partial.top5, top5])
        interval = accuracy_interval(top1)
        table = self.cost_table(self.model, assignment)
        metrics = {
            "accuracy": interval.accuracy,
            "accuracy_low": interval.low,
            "accuracy_high": interval.high,
            "n_images": interval.n_images,
            "accuracy_top5": int(top5.sum()) / len(top5),
            **self.costs(table),
            "inference_time_s": math.nan,
            "ms_per_image": math.nan,
        }
        if timing:
            metrics.update(self._measured_time(candidate))
        if deployed:
            metrics.update(self.deployed_latency(assignment).metrics())
        return CandidateResult(metrics, table)

    def deployment(self, assignment: Assignment) -> dict[str, LayerDeployment]:
        """How each layer of ``assignment`` goes into the ONNX graph
        (:func:`dse.deployment.layer_arithmetic.deployment_plan`)."""
        ranges = self.activation_ranges if needs_activation_ranges(assignment) else None
        return deployment_plan(self.model, assignment, ranges, per_channel=self.per_channel)

    def float_graph(self) -> onnx.ModelProto:
        """The exact model exported to ONNX, once."""
        if self._float_graph is None:
            self._float_graph = export_float_graph(self.model, self.evaluator.labelled_batches(stop=1)[0][0])
        return self._float_graph

    def deployed_latency(self, assignment: Assignment) -> DeployedLatency:
        """``assignment``'s ONNX export on ONNX Runtime against the float32 export (``deployed_timing``);
        refused for a layer no runtime runs as dse emulates it."""
        plan = self.deployment(assignment)
        emulated = undeployable_layers(plan)
        if emulated:
            raise ConfigError(
                f"deployed_latency_ms times what ONNX Runtime runs, but {len(emulated)} layer(s) of this candidate "
                f"are emulated only ({', '.join(emulated[:3])}{' ...' if len(emulated) > 3 else ''}: decimal places "
                "or an approximate multiplier). Use it with a formats space (space=formats_group), or use "
                "modeled_latency_us."
            )
        timing = self.deployed_timing
        images = torch.cat([x for x, _ in self.evaluator.labelled_batches(stop=max(timing.batch_sizes))])
        graph = candidate_graph(self.float_graph(), plan)
        return measure_latency(graph, self.float_graph(), images, timing.batch_sizes, timing.repeats, timing.threads)

    def _measured_time(self, candidate: nn.Module) -> dict[str, float]:
        if not self.evaluator.relative_timing:
            t = self.evaluator.inference_time(candidate)
            return {
                "inference_time_s": t.median_s,
                "ms_per_image": t.ms_per_image,
                "inference_time_min_s": t.min_s,
                "inference_time_max_s": t.max_s,
            }
        if self._timing_reference is None:  # a copy: timing moves it to the device and its layout
            self._timing_reference = copy.deepcopy(self.model)
        if self.reference_time_s is None:  # the exact model's own time, once: its fastest pass
            self.reference_time_s = self.evaluator.inference_time(self._timing_reference).min_s
        rel = self.evaluator.relative_time(candidate, self._timing_reference)
        seconds = rel.ratio * self.reference_time_s
        return {
            "inference_time_s": seconds,
            "ms_per_image": 1000.0 * seconds / self.evaluator.n_images,
            "inference_time_ratio": rel.ratio,  # candidate / exact model, the load cancelled
            "inference_time_min_s": rel.min_s,  # the bare wall clock of the candidate's passes
            "inference_time_max_s": rel.max_s,
        }
