"""ONNX Runtime on this CPU: a candidate's graph run for its accuracy and timed against the float32 export.

Latency is measured the way dse measures every time: against the exact model in the same process,
interleaved (candidate, exact, candidate, ...) so a neighbour's load slows both alike, on a fixed number of
threads, the median of the repeats at each batch size.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch

from dse.exceptions import ConfigError

from .onnx_graph import INPUT_NAME

__all__ = [
    "DeployedLatency",
    "DeployedTiming",
    "measure_latency",
    "onnx_session",
    "onnx_top1_correct",
    "time_interleaved",
]


def onnx_session(graph: onnx.ModelProto, threads: int = 1, optimized: bool = True) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of ``graph`` on ``threads`` intra-op threads, with every graph optimisation
    (its QDQ -> integer-kernel fusions, as deployed) or none (``optimized=False``: the graph as written)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its warnings name internal fusions, not the user's problem
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().float().contiguous().numpy()


def onnx_top1_correct(
    session: ort.InferenceSession, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Top-1 correctness of each image of ``batches`` (``(images, labels)``) under ``session``, a CPU bool tensor."""
    out = []
    for x, y in batches:
        logits = session.run(None, {INPUT_NAME: _numpy(x)})[0]
        out.append(torch.from_numpy(logits.argmax(axis=1)) == y.cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


@dataclass(frozen=True)
class DeployedTiming:
    """How a candidate's export is timed (the ``deployment`` config section): batch sizes (the smallest and
    largest become the trial metrics), interleaved repeats per batch size, ONNX Runtime threads."""

    batch_sizes: tuple[int, ...] = (1, 64)
    repeats: int = 10
    threads: int = 1

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1 or self.repeats < 1 or self.threads < 1:
            raise ConfigError(
                f"deployment: batch_sizes {list(self.batch_sizes)}, repeats {self.repeats} and threads {self.threads} "
                "must all be >= 1 (e.g. deployment.batch_sizes=[1,64] deployment.repeats=10 deployment.threads=1)."
            )


@dataclass(frozen=True)
class DeployedLatency:
    """Median milliseconds per batch of a candidate and of the float32 export, at each batch size."""

    candidate_ms: dict[int, float]
    float32_ms: dict[int, float]
    threads: int
    repeats: int

    def speedup(self, batch: int) -> float:
        return self.float32_ms[batch] / self.candidate_ms[batch]

    def metrics(self) -> dict[str, float]:
        """The trial metrics (``dse.objectives.TRIAL_METRICS``): batch 1 and the larger batch."""
        small, large = min(self.candidate_ms), max(self.candidate_ms)
        return {
            "deployed_latency_ms": self.candidate_ms[small],
            "deployed_speedup_vs_fp32": self.speedup(small),
            "deployed_batch_latency_ms": self.candidate_ms[large],
            "deployed_batch_speedup_vs_fp32": self.speedup(large),
        }


def time_interleaved(
    sessions: Mapping[str, ort.InferenceSession], inputs: Mapping[int, np.ndarray], repeats: int
) -> dict[str, dict[int, float]]:
    """Median milliseconds of each session at each batch size (``inputs``: batch size -> array), runs
    interleaved across sessions, after one untimed warm-up run each."""
    times: dict[str, dict[int, list[float]]] = {name: {b: [] for b in inputs} for name in sessions}
    for batch, x in inputs.items():
        for session in sessions.values():
            session.run(None, {INPUT_NAME: x})
        for _ in range(repeats):
            for name, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {INPUT_NAME: x})
                times[name][batch].append(1000.0 * (time.perf_counter() - start))
    return {name: {b: statistics.median(t) for b, t in per.items()} for name, per in times.items()}


def measure_latency(
    candidate: onnx.ModelProto,
    float32: onnx.ModelProto,
    images: torch.Tensor,
    batch_sizes: Sequence[int],
    repeats: int,
    threads: int = 1,
) -> DeployedLatency:
    """``candidate`` against ``float32`` on ONNX Runtime, interleaved, at each of ``batch_sizes`` (images
    taken from ``images``, repeated if it holds fewer)."""
    pool = _numpy(images)
    inputs = {b: np.ascontiguousarray(np.resize(pool, (b, *pool.shape[1:]))) for b in batch_sizes}
    sessions = {"candidate": onnx_session(candidate, threads), "float32": onnx_session(float32, threads)}
    medians = time_interleaved(sessions, inputs, repeats)
    return DeployedLatency(medians["candidate"], medians["float32"], threads, repeats)
