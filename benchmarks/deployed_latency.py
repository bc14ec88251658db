"""The shipped MobileNetV2 deployed on ONNX Runtime: float32, int8, and the best int8 point of a deployed study.

Exports (dse/deployment), each scored by ONNX Runtime and by dse's emulation on the same held-out images and
timed on ONNX Runtime (this CPU, one thread, batch 1 and 64, median of runs interleaved across all exports):

- float32: the trained model (BatchNorm folded) as exported;
- int8: weights int8 per output channel, activations uint8 per tensor at every layer's input (the unsigned
  activations ONNX Runtime's x86 integer kernels take), the residual stream float32, as dse emulates it;
- int8, signed activations: the same with int8 activations (what the formats space calls int8);
- the most accurate front point of ``study=mobilenet_cifar10_deployed`` whose layers are all integer formats
  of at most 8 bits (searched here with ``--trials`` unless ``--storage`` holds that study);
- ONNX Runtime's own static quantization (``quantize_static``, every tensor uint8 including the residual
  adds), for reference: not dse's arithmetic, so only its own accuracy is shown.

    python benchmarks/deployed_latency.py --npz /path/cifar10.npz          # held-out half from an .npz
    python benchmarks/deployed_latency.py                                  # torchvision's downloader

Last line: ``int8_speedup_vs_fp32=<x> export_accuracy_matches=<true|false>`` (batch 1; "matches": on every
export of dse's arithmetic, ONNX Runtime and dse differ on at most 1% of the images).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import optuna
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from dse.assignment import Assignment, LayerConfig, targetable_layers
from dse.config_building import build_trained_model, candidate_evaluator, evaluator_on
from dse.config_paths import CONFIG_DIR
from dse.deployment.onnx_graph import INPUT_NAME, candidate_graph
from dse.deployment.runtime import onnx_session, onnx_top1_correct, time_interleaved
from dse.numerics.formats import FixedPoint, parse_format
from dse.search import run_search
from dse.search_spaces import SearchSpace

BATCHES = (1, 64)
INT8 = "int8 (W int8/ch, A uint8)"


@dataclass(frozen=True)
class _Row:
    onnx: float  # ONNX Runtime's top-1
    dse: float | None = None  # dse's emulated top-1 (exports of dse's arithmetic)
    differ: int | None = None  # images whose top-1 correctness differs


class _Calibration(CalibrationDataReader):
    def __init__(self, batches: list[torch.Tensor]) -> None:
        self._it = iter([{INPUT_NAME: b.contiguous().numpy()} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _ort_static(graph: onnx.ModelProto, calibration: list[torch.Tensor], folder: Path) -> onnx.ModelProto:
    """ONNX Runtime's own QDQ quantization (uint8 activations, int8 per-channel weights, every tensor)."""
    src, dst = folder / "float32.onnx", folder / "ort_static.onnx"
    onnx.save(graph, str(src))
    quantize_static(
        str(src), str(dst), _Calibration(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return onnx.load(str(dst))


def _all_integer_8bit(assignment: Assignment) -> bool:
    formats = [f for c in assignment.values() for f in (c.weight_format, c.activation_format)]
    return bool(formats) and all(
        f is not None and isinstance(parse_format(f), FixedPoint) and parse_format(f).bits <= 8 for f in formats
    )


def _best_front_point(model: torch.nn.Module, storage: str | None, trials: int, folder: Path) -> tuple[int, Assignment]:
    overrides = [f"study.n_trials={trials}", "final_eval.enabled=false", "tracking=none"]
    if storage:
        overrides.append(f"storage.url={storage}")
    else:
        overrides.append(f"storage.url=sqlite:///{folder}/optuna.db")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        study_cfg = compose("config", overrides=["study=mobilenet_cifar10_deployed", *overrides])
    study = run_search(study_cfg).study
    space: SearchSpace = instantiate(study_cfg.space)
    bound = space.bind(model, dict(study_cfg.model.layer_groups))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    front = {t.number for t in study.best_trials}
    candidates = [t for t in done if _all_integer_8bit(bound.assignment(t.params))]
    on_front = [t for t in candidates if t.number in front] or candidates
    best = max(on_front, key=lambda t: t.user_attrs["accuracy"])
    return best.number, bound.assignment(best.params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", help="held-out images from a CIFAR-10 .npz of your own (else torchvision's)")
    parser.add_argument("--images", type=int, default=1000, help="held-out images scored by both runtimes")
    parser.add_argument("--trials", type=int, default=24, help="trials of the deployed study searched here")
    parser.add_argument("--storage", help="an Optuna storage URL already holding mobilenet_cifar10_deployed")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved timed runs per export and batch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # quantize_static's advice on pre-processing, per call
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    npz = ["data@final_eval.data=cifar10_npz", f"final_eval.data.path={args.npz}"] if args.npz else []
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["study=mobilenet_cifar10_deployed", *npz])
    torch.set_num_threads(1)
    model = build_trained_model(cfg.model)
    search = candidate_evaluator(cfg, model)
    held = search.on(evaluator_on(cfg, cfg.final_eval.data))
    n = min(args.images, held.evaluator.n_images)
    layers = list(targetable_layers(model))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        number, front_point = _best_front_point(model, args.storage, args.trials, folder)
        exports: dict[str, Assignment] = {
            "float32": {},
            INT8: {layer: LayerConfig(weight_format="int8", activation_format="uint8") for layer in layers},
            "int8 (W int8/ch, A int8)": {
                layer: LayerConfig(weight_format="int8", activation_format="int8") for layer in layers
            },
            f"deployed study trial {number}": front_point,
        }
        graphs = {name: candidate_graph(search.float_graph(), search.deployment(a)) for name, a in exports.items()}
        calibration = [x for x, _ in search.evaluator.labelled_batches(stop=256)]
        graphs["ORT quantize_static (reference)"] = _ort_static(search.float_graph(), calibration, folder)
    batches = held.evaluator.labelled_batches(stop=n)
    rows: dict[str, _Row] = {}
    for name, graph in graphs.items():
        onnx_top1 = onnx_top1_correct(onnx_session(graph), batches)
        row = _Row(float(onnx_top1.float().mean()))
        if name in exports:
            dse_top1, _ = held.evaluator.correct(held.candidate(exports[name]), stop=n)
            row = _Row(row.onnx, float(dse_top1.float().mean()), int((dse_top1 != onnx_top1).sum()))
        rows[name] = row
    pool = torch.cat([x for x, _ in batches]).contiguous().numpy()
    inputs = {b: np.ascontiguousarray(np.resize(pool, (b, *pool.shape[1:]))) for b in BATCHES}
    times = time_interleaved({name: onnx_session(g, 1) for name, g in graphs.items()}, inputs, args.repeats)
    base = times["float32"]
    print(f"MobileNetV2-for-CIFAR on ONNX Runtime (CPU, 1 thread, median of {args.repeats} interleaved runs)")
    print(f"accuracy: top-1 on {n} held-out test images ({cfg.final_eval.data.test_split} half)\n")
    header = "| export | ORT top-1 % | dse top-1 % | images differing | ms b=1 | x fp32 b=1 | ms b=64 | x fp32 b=64 |"
    print(header)
    print("|" + "---|" * 8)
    for name, row in rows.items():
        dse = f"{100 * row.dse:.2f}" if row.dse is not None else "(not dse's arithmetic)"
        differ = f"{row.differ} of {n}" if row.differ is not None else ""
        t = times[name]
        print(
            f"| {name} | {100 * row.onnx:.2f} | {dse} | {differ} | {t[1]:.3f} | {base[1] / t[1]:.2f} | "
            f"{t[64]:.2f} | {base[64] / t[64]:.2f} |"
        )
    print(f"\ndeployed study trial {number}: " + ", ".join(
        f"{k}={v.weight_format}/{v.activation_format}" for k, v in list(front_point.items())[:6]
    ) + (" ..." if len(front_point) > 6 else ""))  # fmt: skip
    matches = all(r.differ is not None and r.differ <= 0.01 * n for name, r in rows.items() if name in exports)
    speedup = base[1] / times[INT8][1]
    print(f"int8_speedup_vs_fp32={speedup:.2f} export_accuracy_matches={'true' if matches else 'false'}")


if __name__ == "__main__":
    main()
