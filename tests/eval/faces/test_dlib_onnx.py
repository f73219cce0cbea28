"""dlib's ResNet run from its own weight file in onnxruntime, checked against dlib's own call."""
import dlib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval.cache import ResultCache
from eval.faces.dlib_onnx import DlibNetworkError, read_dlib_resnet
from eval.faces.images import load_image
from eval.models import verified_model_path
from eval.scoring.analysis import CachedFaceAnalysis

MAX_L2 = 1e-4


@pytest.fixture(scope="module")
def weights():
    return verified_model_path("dlib")


@pytest.fixture(scope="module")
def weight_bytes(weights):
    return weights.read_bytes()


@pytest.fixture(scope="module")
def chips(analyzer, bundled, faces_dir):
    """dlib's 150x150 chip of every bundled photo's main face, as the analyzer makes it."""
    recognizer = analyzer.recognizers["dlib"]
    return {stem: recognizer.prepare(load_image(faces_dir / f"{stem}.jpg"), result.main_face)
            for stem, result in bundled.items()}


def test_descriptors_match_dlibs_own_on_every_bundled_face(analyzer, bundled, chips, weights):
    oracle = dlib.face_recognition_model_v1(str(weights))
    stems = sorted(chips)
    expected = np.asarray(oracle.compute_face_descriptor([chips[stem] for stem in stems]))
    embedded = analyzer.recognizers["dlib"].embed([chips[stem] for stem in stems])
    analysed = np.stack([bundled[stem].main_face.embeddings["dlib"] for stem in stems])
    assert len(stems) == 10
    for got in (embedded, analysed):
        distances = np.linalg.norm(got - expected, axis=1)
        assert distances.max() <= MAX_L2, dict(zip(stems, distances.round(8)))
    # measured: worst 1.0e-6 L2 on descriptors of norm 1.37-1.52
    single = analyzer.recognizers["dlib"].embed([chips[stems[0]]])
    assert np.linalg.norm(single[0] - expected[0]) <= MAX_L2  # a batch of one is the same network


def test_reader_follows_the_architecture(weights):
    layers = read_dlib_resnet(weights)
    kinds = [layer.kind for layer in layers]
    assert kinds.count("con") == 29 and kinds.count("add_prev") == 14 and kinds.count("affine") == 29
    assert layers[1].weights["W"].shape == (32, 3, 7, 7)
    assert layers[-2].weights["W"].shape == (256, 128)
    np.testing.assert_allclose(layers[0].weights["mean"], [122.782, 117.001, 104.298], atol=1e-3)


def _assert_names_the_file(path, reason: str):
    with pytest.raises(DlibNetworkError) as error:
        read_dlib_resnet(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not dlib's face recognition ResNet (") and "\n" not in message
    assert reason in message


def test_another_dlib_file_is_refused_by_name():
    _assert_names_the_file(verified_model_path("dlib_landmarks5"), "expected loss layer")


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda data: data.replace(b"loss_metric_2", b"loss_metric_9", 1), "expected loss layer 'loss_metric_2'"),
    (lambda data: data.replace(b"\x01\x05con_4", b"\x01\x05con_7", 1), "expected layer 'con_4'"),
    (lambda data: data.replace(b"\x05relu_", b"\x05relx_", 1), "expected layer 'relu_'"),
    (lambda data: data + b"\x00", "1 bytes left over"),
    (lambda data: data[:-1], "file ends early"),
    (lambda data: b"", "file ends early"),
    (lambda data: b"\x7f" + data[1:], "bad integer header 0x7f"),
])
def test_a_damaged_file_is_refused_by_name(tmp_path, weight_bytes, damage, reason):
    path = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    path.write_bytes(damage(weight_bytes))
    _assert_names_the_file(path, reason)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0.0, 0.9999))
def test_any_truncation_is_refused_by_name(tmp_path, weight_bytes, fraction):
    path = tmp_path / "truncated.dat"
    path.write_bytes(weight_bytes[: int(fraction * len(weight_bytes))])
    _assert_names_the_file(path, "file ends early")


def test_a_missing_file_is_refused_by_name(tmp_path):
    path = tmp_path / "absent.dat"
    with pytest.raises(DlibNetworkError, match=rf"^{path}: cannot read"):
        read_dlib_resnet(path)


def test_onnx_descriptors_have_their_own_cache_namespace(analyzer, tmp_path):
    namespaces = CachedFaceAnalysis(analyzer, ResultCache(tmp_path / "cache.sqlite")).embed_namespaces
    assert namespaces["dlib"].endswith("/dlib-onnx-v1")  # records computed by dlib's own runtime are not reused
    assert "onnx" not in namespaces["sface"]
