"""The ONNX graph of a candidate: the exact model exported once, then each layer's arithmetic written into it.

:func:`export_float_graph` exports the trained (BatchNorm-folded) model to ONNX with torch's exporter, once
per model. :func:`candidate_graph` copies that graph and, for each layer of a
:func:`~dse.deployment.layer_arithmetic.deployment_plan`, replaces the weight by its stored form
(integer codes or a narrow float type, then DequantizeLinear or Cast) and rounds the layer's input
(QuantizeLinear -> DequantizeLinear, or a Cast pair) exactly where dse's emulation rounds it: the QDQ form
that ONNX Runtime turns into its integer kernels where a quantized input meets a quantized output.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import ml_dtypes
import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from dse.emulation.recurrent import UnrolledRecurrent
from dse.exceptions import ConfigError

from .layer_arithmetic import LayerDeployment, TensorRounding

__all__ = ["INPUT_NAME", "OPSET", "candidate_graph", "export_float_graph"]

OPSET = 21  # int16/uint16 QuantizeLinear
INPUT_NAME = "input"
_NUMPY_TYPES: dict[int, type] = {
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
    TensorProto.INT16: np.int16,
    TensorProto.UINT16: np.uint16,
    TensorProto.FLOAT16: np.float16,
    TensorProto.BFLOAT16: ml_dtypes.bfloat16,
}
_logger = logging.getLogger(__name__)


def export_float_graph(model: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """``model`` (eval mode, on CPU) as a float32 ONNX graph with a dynamic batch dimension; parameters keep
    their state_dict names, which is how :func:`candidate_graph` finds each layer."""
    recurrent = [name for name, m in model.named_modules() if isinstance(m, (UnrolledRecurrent, nn.RNNBase))]
    if recurrent:  # a time loop over packed, variable-length sequences: no static graph holds it as dse runs it
        raise ConfigError(
            f"dse.export does not deploy recurrent layers yet ({', '.join(recurrent)}): their per-step loop over "
            "variable-length sequences is emulated only. Compare such models with modeled_latency_us and energy_uj."
        )
    model = model.cpu().eval()
    example = example[:1].detach().cpu().contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("torch.onnx", "onnx_ir", "onnxscript"):  # per-pass progress, not the user's concern
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=["output"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
        except Exception as exc:  # the exporter's own message says which operator or construct failed
            raise ConfigError(
                f"torch.onnx.export could not export the model ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
                "dse.export needs a model torch.export can trace."
            ) from exc
        assert program is not None
        proto = program.model_proto  # it writes to any binary file object
    if not proto.graph.initializer:
        raise ConfigError("torch.onnx.export returned a graph without its weights; dse.export cannot map its layers.")
    return proto


def _initializer(graph: onnx.GraphProto, name: str, values: np.ndarray, onnx_type: int | None = None) -> str:
    if onnx_type is None or onnx_type == TensorProto.FLOAT:
        tensor = numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)
    else:
        tensor = numpy_helper.from_array(np.asarray(values).astype(_NUMPY_TYPES[onnx_type]), name)
    graph.initializer.append(tensor)
    return name


def _per_axis(node: onnx.NodeProto, axis: int | None) -> onnx.NodeProto:
    """``node`` with the per-channel ``axis`` attribute of Quantize/DequantizeLinear, if the rounding has one."""
    if axis is not None:
        node.attribute.append(helper.make_attribute("axis", axis))
    return node


def _rounding_nodes(graph: onnx.GraphProto, source: str, target: str, r: TensorRounding, prefix: str) -> list:
    """Nodes that take ``source`` to ``target``, rounded by ``r`` (dequantized back to float32)."""
    nodes = []
    if r.how == "cast":  # a Cast overflows to inf where dse saturates: clip first
        if r.clip is not None:
            lo = _initializer(graph, f"{prefix}.clip_min", np.array(r.clip[0], np.float32))
            hi = _initializer(graph, f"{prefix}.clip_max", np.array(r.clip[1], np.float32))
            nodes.append(helper.make_node("Clip", [source, lo, hi], [f"{prefix}.clipped"], name=f"{prefix}.Clip"))
            source = f"{prefix}.clipped"
        nodes.append(helper.make_node("Cast", [source], [f"{prefix}.narrow"], to=r.onnx_type, name=f"{prefix}.Cast"))
        nodes.append(
            helper.make_node("Cast", [f"{prefix}.narrow"], [target], to=TensorProto.FLOAT, name=f"{prefix}.Cast_back")
        )
        return nodes
    scale = _initializer(graph, f"{prefix}.scale", r.scale)
    zero = _initializer(graph, f"{prefix}.zero_point", r.zero_point, r.onnx_type)
    dequantized = target if r.clip is None else f"{prefix}.dequantized"
    nodes.append(
        _per_axis(
            helper.make_node("QuantizeLinear", [source, scale, zero], [f"{prefix}.q"], f"{prefix}.Quantize"), r.axis
        )
    )
    nodes.append(
        helper.make_node("DequantizeLinear", [f"{prefix}.q", scale, zero], [dequantized], name=f"{prefix}.Dequantize")
    )
    if r.clip is not None:  # narrower than its container: saturate the codes, after rounding (exact multiples
        # of the scale; before the QuantizeLinear, ONNX Runtime's Clip/Quantize fusion would drop it)
        lo = _initializer(graph, f"{prefix}.clip_min", np.array(r.clip[0], np.float32))
        hi = _initializer(graph, f"{prefix}.clip_max", np.array(r.clip[1], np.float32))
        nodes.append(helper.make_node("Clip", [dequantized, lo, hi], [target], name=f"{prefix}.Saturate"))
    return nodes


def _weight_nodes(graph: onnx.GraphProto, layer: LayerDeployment, weight_name: str) -> list:
    """Replace the float32 weight initializer by the stored weight (and its DequantizeLinear or Cast)."""
    for init in list(graph.initializer):
        if init.name == weight_name:
            graph.initializer.remove(init)
    r = layer.weight_rounding
    if r is None:
        _initializer(graph, weight_name, layer.weight)
        return []
    stored = _initializer(graph, f"{layer.name}.weight_stored", layer.stored, r.onnx_type)
    if r.how == "cast":
        return [
            helper.make_node("Cast", [stored], [weight_name], to=TensorProto.FLOAT, name=f"{layer.name}.weight.Cast")
        ]
    scale = _initializer(graph, f"{layer.name}.weight.scale", r.scale)
    zero = _initializer(graph, f"{layer.name}.weight.zero_point", r.zero_point, r.onnx_type)
    name = f"{layer.name}.weight.Dequantize"
    node = _per_axis(helper.make_node("DequantizeLinear", [stored, scale, zero], [weight_name], name), r.axis)
    return [node]


def candidate_graph(float_graph: onnx.ModelProto, plan: Mapping[str, LayerDeployment]) -> onnx.ModelProto:
    """A copy of ``float_graph`` with each planned layer's weight and input rounded as dse emulates them."""
    model = onnx.ModelProto()
    model.CopyFrom(float_graph)
    graph = model.graph
    by_weight = {f"{name}.weight": layer for name, layer in plan.items()}
    found: set[str] = set()
    head, body = [], []
    for node in graph.node:
        layer = by_weight.get(node.input[1]) if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 else None
        if layer is not None and layer.name not in found:
            if node.op_type == "Gemm" and helper.get_node_attr_value(node, "transB") != 1:
                raise ConfigError(
                    f"Layer {layer.name!r}: exported as a Gemm without transB, which dse.export does not map."
                )
            found.add(layer.name)
            head += _weight_nodes(graph, layer, node.input[1])
            if layer.input_rounding is not None:
                rounded = f"{layer.name}.input_rounded"
                body += _rounding_nodes(graph, node.input[0], rounded, layer.input_rounding, f"{layer.name}.input")
                node.input[0] = rounded
        body.append(node)
    missing = sorted(set(plan) - found)
    if missing:
        raise ConfigError(
            f"Layers {missing} are not a Conv or Gemm reading their weight in the exported graph (torch's exporter "
            "rewrote them), so dse.export cannot place their rounding."
        )
    del graph.node[:]
    graph.node.extend(head + body)
    onnx.checker.check_model(model)
    return model
