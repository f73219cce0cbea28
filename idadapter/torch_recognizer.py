"""A face recognizer as a differentiable torch module, converted from its ONNX graph with onnx2torch.

The SFace int8 file stores its weights block-quantized (DequantizeLinear, then Reshape, of constant
initializers); onnx2torch wants plain float weights, so those constant sub-graphs are folded into fp32
initializers first, and the opset is lowered to one onnx2torch knows (the ops left after folding —
Conv, BatchNormalization, PRelu, Gemm, Flatten, Sub, Mul, Constant, Dropout — mean the same there).
The converted module computes the same embedding as onnxruntime (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from eval.faces.recognizers import sface_graph
from eval.models import model_path, verified_model_path


ONNX2TORCH_OPSET = 17


@dataclass(frozen=True)
class RecognizerInput:
    """How a recognizer's graph wants its 112×112 ArcFace-aligned crop: x_graph = (255·x_rgb01 − mean) / std."""

    bgr: bool
    mean: float
    std: float


RECOGNIZER_INPUTS = {
    "sface": RecognizerInput(bgr=False, mean=0.0, std=1.0),  # the graph normalises itself
    "arcface": RecognizerInput(bgr=False, mean=127.5, std=127.5),  # insightface w600k_r50
}


def _dequantize(quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int,
                block_size: int) -> np.ndarray:
    zero_point = np.zeros_like(scale) if zero_point is None else zero_point
    if scale.ndim == 0:
        return ((quantized.astype(np.float32) - zero_point) * scale).astype(np.float32)
    repeat = block_size if block_size else 1
    scale = np.repeat(scale, repeat, axis=axis).take(range(quantized.shape[axis]), axis=axis)
    zero_point = np.repeat(zero_point, repeat, axis=axis).take(range(quantized.shape[axis]), axis=axis)
    if scale.ndim == 1 and quantized.ndim > 1:  # per-axis scales broadcast along `axis`
        shape = [1] * quantized.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((quantized.astype(np.float32) - zero_point.astype(np.float32)) * scale).astype(np.float32)


def prepare_for_onnx2torch(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold DequantizeLinear / Reshape of constants into fp32 initializers; lower the opset."""
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type not in ("DequantizeLinear", "Reshape") or not all(name in constants for name in inputs):
            kept.append(node)
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        values = [constants[name] for name in inputs]
        if node.op_type == "DequantizeLinear":
            zero_point = values[2] if len(values) > 2 else None
            folded = _dequantize(values[0], values[1], zero_point, attributes.get("axis", 1), attributes.get("block_size", 0))
        else:
            folded = values[0].reshape(values[1])
        constants[node.output[0]] = folded
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items() if name in used)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = min(opset.version, ONNX2TORCH_OPSET)
    return model


class TorchRecognizer(nn.Module):
    """aligned (B, 3, 112, 112) RGB in [0, 1] → L2-normalised identity embeddings (B, dim)."""

    def __init__(self, network: nn.Module, recognizer_input: RecognizerInput, recognizer_id: str):
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.recognizer_input = recognizer_input
        self.recognizer_id = recognizer_id
        with torch.no_grad():
            self.dim = int(self.network(torch.zeros(1, 3, 112, 112)).shape[-1])

    @classmethod
    def from_register(cls, recognizer_id: str = "sface", model_file=None) -> "TorchRecognizer":
        from onnx2torch import convert

        if recognizer_id not in RECOGNIZER_INPUTS:
            raise ValueError(f"no differentiable recognizer for {recognizer_id!r}; available: {sorted(RECOGNIZER_INPUTS)}")
        if recognizer_id == "sface":
            model = onnx.load_from_string(sface_graph(verified_model_path("sface", model_file)))
        else:
            model = onnx.load(str(model_path(recognizer_id, model_file)))
        return cls(convert(prepare_for_onnx2torch(model)), RECOGNIZER_INPUTS[recognizer_id], recognizer_id)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        spec = self.recognizer_input
        pixels = aligned.flip(1) if spec.bgr else aligned
        pixels = (pixels * 255.0 - spec.mean) / spec.std
        return nn.functional.normalize(self.network(pixels).float(), dim=-1)
