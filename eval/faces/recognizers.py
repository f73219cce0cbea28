"""Identity recognizers. Each turns faces into embeddings in two steps, so that many faces share one
model call: `prepare` (cheap, per face) and `embed` (one batched inference for all prepared inputs).

Similarity is always "higher is more alike", with a documented same-person threshold:
- sface, arcface: cosine similarity of the embeddings.
- dlib: its descriptors are compared by Euclidean distance d (dlib's published rule: same person when
  d < 0.6). The suite reports ``1 - d / 1.2``: 1 for identical descriptors, 0.5 at dlib's threshold.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np

from eval.faces.align import align_face
from eval.faces.cpus import cpu_budget
from eval.faces.dlib_onnx import CHIP_SIZE, DLIB_ONNX_VERSION, onnx_graph, read_dlib_resnet
from eval.faces.graphs import built_graph
from eval.faces.types import Face
from eval.models import model_path, verified_model_path

EMBED_BATCH = 32
SFACE_GRAPH_VERSION = "sface-fp32-v1"  # what sface_graph makes of the shipped file; change it with sface_graph
DLIB_DISTANCE_THRESHOLD = 0.6


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def dlib_similarity(a: np.ndarray, b: np.ndarray) -> float:
    distance = float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))
    return 1.0 - distance / (2 * DLIB_DISTANCE_THRESHOLD)


def onnx_session(onnx_model, threads: int | None = None):
    """An onnxruntime CPU (or CUDA, with onnxruntime-gpu) session, quiet about graph warnings;
    `threads` intra-op threads (default: up to 4 of this process's CPUs; 0: onnxruntime's own default, one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = min(4, cpu_budget()) if threads is None else threads
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(onnx_model, options, providers=providers)


CONSTANT_FOLDED_OPS = {"DequantizeLinear", "Reshape"}


def fold_constant_weights(model) -> None:
    """Replace every dequantize (and reshape) of constant weights by its fp32 result, in place.

    Computed once at load with ONNX's reference evaluator, so inference runs plain fp32 convolutions
    instead of dequantizing the block-quantized weights on every call; the values are the ones the
    int8 graph computes."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    folded, kept = {}, []
    for node in graph.node:
        if node.op_type in CONSTANT_FOLDED_OPS and all(name in constants for name in node.input if name):
            results = ReferenceEvaluator(node).run(None, {name: constants[name] for name in node.input if name})
            for name, value in zip(node.output, results):
                constants[name] = folded[name] = value
        else:
            kept.append(node)
    read = {name for node in kept for name in node.input}
    tensors = [t for t in graph.initializer if t.name in read and t.name not in folded]
    tensors += [numpy_helper.from_array(value, name) for name, value in folded.items() if name in read]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(kept)
    graph.initializer.extend(tensors)


def run_batched(session, inputs: list[np.ndarray], dim: int) -> np.ndarray:
    """The session's first output for `inputs`, EMBED_BATCH at a time, as float32 (len(inputs), dim)."""
    name = session.get_inputs()[0].name
    batches = [session.run(None, {name: np.stack(inputs[start : start + EMBED_BATCH])})[0]
               for start in range(0, len(inputs), EMBED_BATCH)]
    return np.concatenate(batches).astype(np.float32) if batches else np.zeros((0, dim), np.float32)


def sface_graph(path) -> bytes:
    """The SFace int8 graph made loadable, batchable and fp32.

    The shipped file lists stale graph inputs (initializers, and weights that the graph now computes
    by DequantizeLinear) and a fixed batch of 1; onnxruntime refuses the first and cannot batch the
    second. We keep only inputs that a node reads, mark the batch dimension dynamic, and fold the
    dequantized weights to fp32 once (faster, and the same values).
    """
    import onnx

    model = onnx.load(str(path))
    fold_constant_weights(model)
    graph = model.graph
    read = {name for node in graph.node for name in node.input}
    initializers = {tensor.name for tensor in graph.initializer}
    kept = [value for value in graph.input if value.name in read and value.name not in initializers]
    del graph.input[:]
    graph.input.extend(kept)
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return model.SerializeToString()


class Recognizer:
    id: str
    dim: int
    threshold: float
    implementation = ""  # set when the embeddings come from another runtime than the model's own: part of the cache key

    def prepare(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        raise NotImplementedError

    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return cosine(a, b)

    @property
    def model_ids(self) -> list[str]:
        return [self.id]


class SFaceRecognizer(Recognizer):
    """OpenCV Zoo SFace (128-d). Input: the ArcFace-aligned 112x112 crop, RGB, 0..255 (the graph normalises)."""

    id, dim, threshold = "sface", 128, 0.363  # OpenCV's published cosine threshold for SFace

    def __init__(self, model_file=None):
        self._path = verified_model_path("sface", model_file)

    @cached_property
    def _session(self):  # built on the first embedding: a fully cached run never pays for onnx (seconds)
        return onnx_session(built_graph(SFACE_GRAPH_VERSION, self._path, sface_graph))

    def prepare(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        aligned = face.aligned if face.aligned is not None else align_face(rgb, face.landmarks)
        return aligned.transpose(2, 0, 1).astype(np.float32)

    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        return run_batched(self._session, inputs, self.dim)


class DlibRecognizer(Recognizer):
    """dlib ResNet (128-d) on dlib's own 150x150 face chips from its 5-point shape predictor.

    The chips come from dlib; the network runs in onnxruntime, built from dlib's own weight file
    (eval.faces.dlib_onnx; its descriptors match dlib's `compute_face_descriptor` to ~1e-6 L2) on one
    thread: ~2.6 ms a face against dlib's 59 ms, and a second thread gains nothing measurable on a
    shared 2-core machine while taking a core from the other work."""

    id, dim = "dlib", 128
    threshold = 1.0 - DLIB_DISTANCE_THRESHOLD / (2 * DLIB_DISTANCE_THRESHOLD)  # = 0.5
    implementation = DLIB_ONNX_VERSION
    threads = 1

    def __init__(self, model_file=None, landmarks_file=None):
        self._paths = (verified_model_path("dlib", model_file), verified_model_path("dlib_landmarks5", landmarks_file))

    @cached_property
    def _shape_predictor(self):  # loaded on the first face: a fully cached run never reads it
        import dlib

        return dlib.shape_predictor(str(self._paths[1]))

    @cached_property
    def _session(self):
        graph = built_graph(DLIB_ONNX_VERSION, self._paths[0], lambda path: onnx_graph(read_dlib_resnet(path)))
        return onnx_session(graph, threads=self.threads)

    @property
    def model_ids(self) -> list[str]:
        return ["dlib", "dlib_landmarks5"]

    def prepare(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        import dlib

        x0, y0, x1, y1 = (int(round(v)) for v in face.bbox)
        shape = self._shape_predictor(rgb, dlib.rectangle(x0, y0, x1, y1))
        return dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=0.25)

    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        return run_batched(self._session, inputs, self.dim)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return dlib_similarity(a, b)


class ArcFaceRecognizer(Recognizer):
    """A user-supplied insightface ArcFace ONNX (1x3x112x112 -> 512), loaded by insightface.model_zoo."""

    id, threshold = "arcface", 0.30  # a common cosine operating point; calibrate with eval.calibrate

    def __init__(self, model_file=None):
        from insightface.model_zoo import get_model

        self._path = model_path("arcface", model_file)
        self._model = get_model(str(self._path), providers=["CPUExecutionProvider"])
        if self._model is None or getattr(self._model, "taskname", None) != "recognition":
            raise ValueError(f"{self._path}: not an ArcFace recognition model (expected input Nx3x112x112)")

    @cached_property
    def dim(self) -> int:
        return int(self._model.session.get_outputs()[0].shape[-1])

    def prepare(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        aligned = face.aligned if face.aligned is not None else align_face(rgb, face.landmarks)
        return np.ascontiguousarray(aligned[..., ::-1])  # insightface takes BGR

    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        if not inputs:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(
            [self._model.get_feat(inputs[start : start + EMBED_BATCH]) for start in range(0, len(inputs), EMBED_BATCH)]
        ).astype(np.float32)


RECOGNIZERS: dict[str, type[Recognizer]] = {
    "sface": SFaceRecognizer,
    "dlib": DlibRecognizer,
    "arcface": ArcFaceRecognizer,
}


def similarity(recognizer_id: str, a: np.ndarray, b: np.ndarray) -> float:
    return dlib_similarity(a, b) if recognizer_id == "dlib" else cosine(a, b)


def default_threshold(recognizer_id: str) -> float:
    return RECOGNIZERS[recognizer_id].threshold
