"""Graphs built from shipped weights are stored once and read back by every later process."""
import numpy as np

from eval.faces import FaceAnalyzer
from eval.faces.graphs import built_graph, graph_path
from eval.faces.recognizers import SFACE_GRAPH_VERSION, SFaceRecognizer, onnx_session, sface_graph
from eval.models import verified_model_path


def counting(build):
    calls = []

    def counted(path):
        calls.append(path)
        return build(path)
    return counted, calls


def test_the_sface_graph_is_built_once_and_embeds_the_same(faces_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("IDAVATAR_CACHE_DIR", str(tmp_path))
    source = verified_model_path("sface")
    build, calls = counting(sface_graph)
    first = built_graph(SFACE_GRAPH_VERSION, source, build)
    again = built_graph(SFACE_GRAPH_VERSION, source, build)
    assert len(calls) == 1 and again == first and graph_path(SFACE_GRAPH_VERSION, source).is_file()
    face = FaceAnalyzer(recognizers=(), with_expression=False).analyze_one(faces_dir / "biden.jpg").main_face
    fresh = onnx_session(sface_graph(source))
    monkeypatch.setattr("eval.faces.recognizers.sface_graph", lambda path: 1 / 0)  # it must read, not build
    recognizer = SFaceRecognizer()
    inputs = [recognizer.prepare(None, face)]
    assert np.array_equal(recognizer.embed(inputs), fresh.run(None, {fresh.get_inputs()[0].name: np.stack(inputs)})[0])


def test_a_damaged_or_unwritable_store_means_building_again(tmp_path, monkeypatch):
    monkeypatch.setenv("IDAVATAR_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "weights.bin"
    source.write_bytes(b"weights")
    build, calls = counting(lambda path: b"graph of " + path.read_bytes())
    assert built_graph("v1", source, build) == b"graph of weights"
    stored = graph_path("v1", source)
    for damage in (stored.read_bytes()[:-3], b"", stored.read_bytes()[:32] + b"graph of other weights"):
        stored.write_bytes(damage)
        assert built_graph("v1", source, build) == b"graph of weights"
    assert len(calls) == 4 and built_graph("v1", source, build) == b"graph of weights" and len(calls) == 4
    assert built_graph("v2", source, build) == b"graph of weights" and len(calls) == 5  # a new builder version
    monkeypatch.setenv("IDAVATAR_CACHE_DIR", str(source))  # a file where the folder should be
    assert built_graph("v1", source, build) == b"graph of weights" and len(calls) == 6
