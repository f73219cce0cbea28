"""dlib's face ResNet: dlib's own CPU build against the ONNX translation (eval/faces/dlib_onnx.py),
on dlib's 150x150 chips of the 10 bundled photos, all in one run:

    pytest benchmarks/test_bench_dlib_onnx.py -m benchmark -s

Per face, best of REPEAT, the 10 chips in one call: dlib's `compute_face_descriptor`; onnxruntime on
one intra-op thread (the face core's setting), on two, and on onnxruntime's default; and the
one-off load of each (dlib's deserialisation; reading the .dat + building the graph + the session).
Also the worst descriptor distance between the two. Writes benchmarks/results/dlib_onnx_cpu.json.
"""
import json
import os
import platform
import time
from pathlib import Path

import dlib
import numpy as np
import pytest

from eval.faces import FaceAnalyzer, load_image
from eval.faces.dlib_onnx import onnx_graph, read_dlib_resnet
from eval.faces.recognizers import onnx_session, run_batched
from eval.models import verified_model_path

REPEAT = 5
RESULTS = Path(__file__).parent / "results" / "dlib_onnx_cpu.json"
FACES_DIR = Path(__file__).resolve().parents[1] / "eval" / "demo" / "faces"


def best_seconds(call, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.benchmark
def test_dlib_resnet_own_vs_onnx():
    analyzer = FaceAnalyzer(recognizers=("dlib",))
    recognizer = analyzer.recognizers["dlib"]
    paths = sorted(FACES_DIR.glob("*.jpg"))
    chips = [recognizer.prepare(load_image(path), result.main_face) for path, result in zip(paths, analyzer.analyze(paths))]
    weights = verified_model_path("dlib")

    load = {"dlib": best_seconds(lambda: dlib.face_recognition_model_v1(str(weights)), 1)}
    own = dlib.face_recognition_model_v1(str(weights))
    start = time.perf_counter()
    graph = onnx_graph(read_dlib_resnet(weights))
    load["onnx_graph"] = time.perf_counter() - start
    sessions = {}
    for label, threads in (("onnx_1_thread", 1), ("onnx_2_threads", 2), ("onnx_default_threads", 0)):
        start = time.perf_counter()
        sessions[label] = onnx_session(graph, threads=threads)
        load[f"{label}_session"] = time.perf_counter() - start
        run_batched(sessions[label], chips, 128)  # warm-up

    per_face_ms = {"dlib": 1000 * best_seconds(lambda: own.compute_face_descriptor(chips), 3) / len(chips)}
    for label, session in sessions.items():
        per_face_ms[label] = 1000 * best_seconds(lambda: run_batched(session, chips, 128)) / len(chips)
    expected = np.asarray(own.compute_face_descriptor(chips))
    worst_l2 = float(np.linalg.norm(run_batched(sessions["onnx_1_thread"], chips, 128) - expected, axis=1).max())

    report = {
        "faces": len(chips),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1min": round(os.getloadavg()[0], 2),
        "per_face_ms": {key: round(value, 2) for key, value in per_face_ms.items()},
        "speedup": {key: round(per_face_ms["dlib"] / value, 1) for key, value in per_face_ms.items() if key != "dlib"},
        "load_seconds": {key: round(value, 3) for key, value in load.items()},
        "worst_descriptor_l2": worst_l2,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
