"""The model register: resolution order, checksums, and a clear error for missing weights."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eval.faces import FaceAnalyzer
from eval.models import REGISTER, ModelChecksumMismatch, ModelNotFound, model_path, verified_model_path


def test_every_entry_declares_licence_and_commercial_use():
    for spec in REGISTER.values():
        assert spec.license and spec.source and isinstance(spec.commercial_use, bool)
    assert REGISTER["dlib_landmarks68"].commercial_use is False  # iBUG 300-W excludes commercial use
    assert REGISTER["arcface"].commercial_use is False


@pytest.mark.parametrize("model_id", ["yunet", "sface", "dlib", "dlib_landmarks5", "fer"])
def test_shipped_weights_resolve_from_packages_and_match_pinned_sha256(model_id):
    path = verified_model_path(model_id)
    assert path.is_file() and "site-packages" in str(path)


def test_resolution_order_explicit_then_env_then_user_dir(tmp_path, monkeypatch):
    user_dir = tmp_path / "cache"
    user_dir.mkdir()
    monkeypatch.setenv("IDAVATAR_MODEL_DIR", str(user_dir))
    cached = user_dir / REGISTER["fer"].filename
    cached.write_bytes(b"user copy")
    assert model_path("fer") == cached  # user cache dir before the packaged file
    env_file = tmp_path / "env.tflite"
    env_file.write_bytes(b"env copy")
    monkeypatch.setenv("IDAVATAR_FER", str(env_file))
    assert model_path("fer") == env_file
    explicit = tmp_path / "explicit.tflite"
    explicit.write_bytes(b"explicit")
    assert model_path("fer", explicit) == explicit
    with pytest.raises(ModelChecksumMismatch, match="does not match"):
        verified_model_path("fer", explicit)


def test_missing_user_supplied_weights_name_file_licence_and_remedy(monkeypatch, tmp_path):
    monkeypatch.setenv("IDAVATAR_MODEL_DIR", str(tmp_path))
    monkeypatch.delenv("IDAVATAR_ARCFACE", raising=False)
    with pytest.raises(ModelNotFound) as caught:
        model_path("arcface")
    message = str(caught.value)
    assert "w600k_r50.onnx" in message and "non-commercial" in message and "IDAVATAR_ARCFACE" in message


def tiny_arcface_onnx(path, dim=512):
    """Random weights with ArcFace's signature (Nx3x112x112 -> N x dim). Exercises the loading path only."""
    rng = np.random.default_rng(0)
    conv = numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 8, 8)).astype(np.float32), "conv_w")
    fc = numpy_helper.from_array(rng.normal(0, 0.1, (8, dim)).astype(np.float32), "fc_w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input.1", "conv_w"], ["c"], strides=[8, 8]),
            helper.make_node("GlobalAveragePool", ["c"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("MatMul", ["f", "fc_w"], ["683"]),
        ],
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", dim])],
        [conv, fc],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_user_supplied_arcface_loads_through_insightface_model_zoo(tmp_path, faces_dir):
    weights = tiny_arcface_onnx(tmp_path / "w600k_r50.onnx")
    analyzer = FaceAnalyzer(recognizers=("arcface",), with_expression=False, model_files={"arcface": str(weights)})
    results = analyzer.analyze([faces_dir / "sunak.jpg", faces_dir / "biden.jpg"])
    vectors = [r.main_face.embeddings["arcface"] for r in results]
    assert all(v.shape == (512,) for v in vectors)
    assert not np.allclose(vectors[0], vectors[1])
    assert "arcface" in analyzer.model_ids
