"""dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) as an ONNX graph.

The weights are read from dlib's own file in pure numpy and the graph is built with `onnx.helper`,
so onnxruntime runs the same network about 10x faster than dlib's single-threaded CPU build; the
descriptors match dlib's own `compute_face_descriptor` (the tests' oracle) to ~1e-6 L2.

The file is dlib's serialization of `anet_type` from dlib's examples/dnn_face_recognition_ex.cpp:
the loss layer, then every layer's version number from the outermost (fc) to the innermost (the
first convolution on the input), then the input layer, then each layer's details from the
innermost out. The layer kinds and their order are not in the file (tag and skip layers are a bare
version number), so we check the file against the architecture below, layer by layer.

Formats (dlib/serialize.h, dlib/cuda/tensor.h, dlib/dnn/{core,layers,input,loss}.h): an integer
is a byte holding its length (low nibble) and sign (0x80), then that many little-endian bytes; a
float is an integer mantissa and an integer exponent of 2; a string is its length then its bytes;
a bool is the character '0' or '1'; a tensor is a version (2), four dimensions, then raw
little-endian float32; an alias tensor is a version (1) and four dimensions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
DLIB_ONNX_VERSION = "dlib-onnx-v1"  # names this translation in the embeddings' cache key


class DlibNetworkError(ValueError):
    """The file is not dlib's face recognition ResNet (the message names the file and the reason)."""


@dataclass
class Layer:
    """One layer of `anet_type`, in forward order. kind: input, con, affine, relu, max_pool, avg_pool,
    add_prev, tag, skip, fc, loss. For con/pool: filters, size, stride; for tag/skip/add_prev: tag."""

    kind: str
    filters: int = 0
    size: int = 0
    stride: int = 1
    tag: int = 0
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    padding: int = 0


def _residual_block(filters: int, down: bool) -> list[Layer]:
    """dlib's `ares<N>` / `ares_down<N>`: two 3x3 convolutions with affine (frozen batch norm), the
    identity (or its 2x2 average pool) added back, then relu."""
    block = [Layer("con", filters, 3, 2 if down else 1), Layer("affine"), Layer("relu"),
             Layer("con", filters, 3, 1), Layer("affine")]
    if down:  # add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,2,tag1<SUB>>>>>>
        return [Layer("tag", tag=1), *block, Layer("tag", tag=2), Layer("skip", tag=1),
                Layer("avg_pool", size=2, stride=2), Layer("add_prev", tag=2), Layer("relu")]
    return [Layer("tag", tag=1), *block, Layer("add_prev", tag=1), Layer("relu")]  # add_prev1<block<N,1,tag1<SUB>>>


def face_resnet() -> list[Layer]:
    """`anet_type` from dlib's examples/dnn_face_recognition_ex.cpp, input to loss."""
    layers = [Layer("input"), Layer("con", 32, 7, 2), Layer("affine"), Layer("relu"), Layer("max_pool", size=3, stride=2)]
    for filters, blocks in ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1)):  # alevel4 ... alevel0
        for index in range(blocks):
            layers += _residual_block(filters, down=index == 0 and filters != 32)
    return [*layers, Layer("avg_pool", size=0, stride=1), Layer("fc", DESCRIPTOR_DIM), Layer("loss")]


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.at = data, path, 0

    def fail(self, reason: str) -> DlibNetworkError:
        return DlibNetworkError(f"{self.path}: not dlib's face recognition ResNet ({reason} at byte {self.at})")

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise self.fail("file ends early")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def int(self) -> int:
        head = self.take(1)[0]
        if head & 0x70 or not 1 <= head & 0x0F <= 8:
            raise self.fail(f"bad integer header 0x{head:02x}")
        value = int.from_bytes(self.take(head & 0x0F), "little")
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if abs(exponent) >= 32000:  # dlib's codes for inf/nan: no weight or setting here is one
            raise self.fail("non-finite number")
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        return self.take(self.int()).decode("latin-1")

    def bool(self) -> bool:
        char = self.take(1)
        if char not in (b"0", b"1"):
            raise self.fail("bad boolean")
        return char == b"1"

    def expect(self, what: str, got, wanted) -> None:
        if got != wanted:
            raise self.fail(f"expected {what} {wanted!r}, found {got!r}")

    def tensor(self) -> np.ndarray:
        self.expect("tensor version", self.int(), 2)
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"bad tensor shape {shape}")
        count = math.prod(shape)
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape)

    def alias(self) -> tuple[int, ...]:
        self.expect("alias tensor version", self.int(), 1)
        return tuple(self.int() for _ in range(4))


def _read_details(reader: _Reader, layer: Layer) -> None:
    """One layer's own serialization (dlib's `serialize(details)`), into `layer.weights`/`padding`."""
    name = reader.string()
    if layer.kind == "con":
        reader.expect("layer", name, "con_4")
        params = reader.tensor().ravel()
        filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(7))
        reader.expect("convolution (filters, size, stride)", (filters, rows, cols, stride_y, stride_x),
                      (layer.filters, layer.size, layer.size, layer.stride, layer.stride))
        reader.expect("square padding", pad_x, pad_y)
        shape = reader.alias()
        reader.expect("bias shape", reader.alias(), (1, filters, 1, 1))
        for _ in range(4):  # learning-rate and weight-decay multipliers: training only
            reader.float()
        weights = math.prod(shape)
        reader.expect("convolution parameter count", params.size, weights + filters)
        layer.weights = {"W": params[:weights].reshape(shape), "B": params[weights:]}
        layer.padding = pad_y
    elif layer.kind == "affine":
        reader.expect("layer", name, "affine_")
        params = reader.tensor().ravel()
        gamma, beta = reader.alias(), reader.alias()
        reader.expect("affine mode (0: per channel)", reader.int(), 0)
        reader.expect("affine shapes", (gamma, 2 * math.prod(gamma)), (beta, params.size))
        half = params.size // 2
        layer.weights = {"gamma": params[:half], "beta": params[half:]}
    elif layer.kind in ("max_pool", "avg_pool"):
        reader.expect("layer", name, f"{layer.kind}_2")
        rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(6))
        reader.expect("pooling (size, stride)", (rows, cols, stride_y, stride_x),
                      (layer.size, layer.size, layer.stride, layer.stride))
        reader.expect("square padding", pad_x, pad_y)
        layer.padding = pad_y
    elif layer.kind == "fc":
        reader.expect("layer", name, "fc_2")
        outputs, inputs = reader.int(), reader.int()
        params = reader.tensor().ravel()
        reader.expect("fc weights shape", reader.alias(), (inputs, outputs, 1, 1))
        reader.alias()  # bias shape: unused without a bias
        reader.expect("fc bias mode (1: no bias)", reader.int(), 1)
        reader.expect("fc (outputs, parameters)", (outputs, params.size), (layer.filters, inputs * outputs))
        for _ in range(4):
            reader.float()
        layer.weights = {"W": params.reshape(inputs, outputs)}
    else:
        reader.expect("layer", name, f"{layer.kind}_")


def _read_trailer(reader: _Reader, bottom: bool) -> None:
    """dlib's add_layer state after the details: three flags and the training buffers."""
    for _ in range(3):
        reader.bool()
    for _ in range(3):
        reader.tensor()
    if bottom:
        reader.int()  # sample expansion factor


def read_dlib_resnet(path: str | Path) -> list[Layer]:
    """The layers of dlib's face ResNet with their weights, input to loss; `DlibNetworkError` otherwise."""
    path = Path(path)
    try:
        reader = _Reader(path.read_bytes(), path)
    except OSError as error:
        raise DlibNetworkError(f"{path}: cannot read ({error.strerror or error})") from None
    layers = face_resnet()
    reader.expect("loss layer version", reader.int(), 1)
    reader.expect("loss layer", reader.string(), "loss_metric_2")
    reader.float(), reader.float()  # margin and distance threshold: training only
    stack = layers[-2:0:-1]  # fc ... first convolution: versions are written outermost first
    for position, layer in enumerate(stack):
        wanted = 3 if position == len(stack) - 1 else 1 if layer.kind in ("tag", "skip") else 2
        reader.expect(f"version of layer {layer.kind}", reader.int(), wanted)
    reader.expect("input layer", reader.string(), "input_rgb_image_sized")
    layers[0].weights = {"mean": np.array([reader.float() for _ in range(3)], dtype=np.float32)}
    reader.expect("input size", (reader.int(), reader.int()), (CHIP_SIZE, CHIP_SIZE))
    for position, layer in enumerate(reversed(stack)):
        if layer.kind not in ("tag", "skip"):
            _read_details(reader, layer)
            _read_trailer(reader, bottom=position == 0)
    if reader.at != len(reader.data):
        raise reader.fail(f"{len(reader.data) - reader.at} bytes left over")
    return layers


def _pooled(size: int, window: int, stride: int, padding: int) -> int:
    return 1 + (size + 2 * padding - window) // stride


def onnx_graph(layers: list[Layer]) -> bytes:
    """The network as a serialized ONNX model: uint8 RGB chips (N, 150, 150, 3) -> descriptors (N, 128).

    dlib's add_prev adds tensors of different sizes by giving the output the larger of each
    dimension with out-of-range values as zero (tt::add); we pad the smaller one at the end of each
    dimension (channels, rows, columns) to match."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, constants = [], []

    def constant(name: str, value: np.ndarray) -> str:
        constants.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], **attributes) -> str:
        output = f"{op.lower()}{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    mean = layers[0].weights["mean"].reshape(1, 1, 1, 3)
    x = node("Cast", ["chips"], to=TensorProto.FLOAT)
    x = node("Mul", [node("Sub", [x, constant("mean", mean)]), constant("scale", np.float32(1 / 256))])
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    shape = (3, CHIP_SIZE, CHIP_SIZE)
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for index, layer in enumerate(layers[1:-1], start=1):
        kind, pads = layer.kind, [layer.padding] * 4
        if kind == "con":
            weights = layer.weights
            x = node("Conv", [x, constant(f"W{index}", weights["W"]), constant(f"B{index}", weights["B"])],
                     kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2, pads=pads)
            side = _pooled(shape[1], layer.size, layer.stride, layer.padding)
            shape = (layer.filters, side, _pooled(shape[2], layer.size, layer.stride, layer.padding))
        elif kind == "affine":
            gamma, beta = (layer.weights[key].reshape(1, -1, 1, 1) for key in ("gamma", "beta"))
            x = node("Add", [node("Mul", [x, constant(f"gamma{index}", gamma)]), constant(f"beta{index}", beta)])
        elif kind == "relu":
            x = node("Relu", [x])
        elif kind in ("max_pool", "avg_pool") and layer.size == 0:  # dlib's avg_pool_everything
            x, shape = node("GlobalAveragePool", [x]), (shape[0], 1, 1)
        elif kind in ("max_pool", "avg_pool"):
            op = "MaxPool" if kind == "max_pool" else "AveragePool"
            x = node(op, [x], kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2, pads=pads)
            shape = (shape[0], *(_pooled(side, layer.size, layer.stride, layer.padding) for side in shape[1:]))
        elif kind == "tag":
            tags[layer.tag] = (x, shape)
        elif kind == "skip":
            x, shape = tags[layer.tag]
        elif kind == "add_prev":
            other, other_shape = tags[layer.tag]
            total = tuple(max(a, b) for a, b in zip(shape, other_shape))

            def padded(tensor: str, size: tuple[int, int, int]) -> str:
                if size == total:
                    return tensor
                pads = constant(f"pads{len(nodes)}", np.array([0, 0, 0, 0, 0, *(t - s for t, s in zip(total, size))]))
                return node("Pad", [tensor, pads])

            x, shape = node("Add", [padded(x, shape), padded(other, other_shape)]), total
        elif kind == "fc":
            x = node("MatMul", [node("Flatten", [x]), constant(f"W{index}", layer.weights["W"])])
        else:
            raise ValueError(f"no ONNX translation for dlib layer {kind}")
    nodes[-1].output[0] = "descriptors"
    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["batch", CHIP_SIZE, CHIP_SIZE, 3])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["batch", DESCRIPTOR_DIM])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="idavatar")
    onnx.checker.check_model(model)
    return model.SerializeToString()
