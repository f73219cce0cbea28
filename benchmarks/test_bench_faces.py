"""Face-core throughput, all in one run over the bundled photos:

(a) the full analysis (`FaceAnalyzer.analyze`: detection, mesh pose, landmark refinement, SFace,
    dlib, expression), batched;
(b) the raw model calls alone, one pass of each model per image or face (every model the analysis
    calls: YuNet, the face mesh, SFace, dlib's 5-point shape predictor and ResNet, the expression
    net), on inputs prepared beforehand: the honest overhead of (a) is a / b;
(c) the `face_recognition` 1.3.0 pipeline (HOG detector, dlib 5-point landmarks and encodings) on
    the same images; it computes one recognizer and no pose or expression.

    pytest benchmarks/test_bench_faces.py -m benchmark -s

Each of a, b and c is timed TRIALS times, interleaved. a / b is the median over trials of each trial's
own ratio (its a and b ran back to back, under the same conditions); the fastest a over the sum of
each model's fastest b is reported beside it, but it is biased upwards on a noisy machine (b takes
the luckiest trial of every model, a only the luckiest whole trial). a / c compares the fastest of
each. Goals: a / b <= 1.15 and a <= 0.5 c. Ratios measured in one run, never a timed assertion.
Writes benchmarks/results/faces_cpu.json. face_recognition is installed `--no-deps` for this
benchmark only (`pip install --no-deps face_recognition==1.3.0`); it is skipped when absent.
"""
import importlib.resources
import json
import os
import platform
import sys
import time
import types
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from eval.faces import FaceAnalyzer, load_image
from eval.faces.crops import levelled_crop
from eval.faces.detector import eye_line_angle
from eval.faces.expression import expression_crop
from eval.faces.mesh import INPUT_SIZE, ROI_SCALE, FaceMesh
from eval.faces.types import Face

REPEAT = 3  # the 10 bundled photos, three times: 30 images
TRIALS = 5
RESULTS = Path(__file__).parent / "results" / "faces_cpu.json"
FACES_DIR = Path(__file__).resolve().parents[1] / "eval" / "demo" / "faces"


def face_recognition_module():
    """face_recognition, or None. Its models package imports pkg_resources (gone from current
    setuptools) for one call, resource_filename, which is given here from importlib.resources."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)
            sys.modules["pkg_resources"] = shim
    try:
        import face_recognition
    except ImportError:
        return None
    return face_recognition


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def raw_model_seconds(analyzer: FaceAnalyzer, images: list[np.ndarray]) -> dict[str, float]:
    """Each model once per image (the detector) or per face (the rest), inputs made beforehand."""
    seconds = dict.fromkeys(["yunet", "face_mesh", "sface", "dlib_landmarks5", "dlib", "fer"], 0.0)
    detector, mesh = analyzer.detector, FaceMesh()  # the fastest single call: one mesh on all its threads
    sface, dlib_net = analyzer.recognizers["sface"], analyzer.recognizers["dlib"]
    faces, mesh_crops, frames = [], [], []
    for rgb in images:
        frame = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        frames.append(frame)
        box, score, marks = detector.detect_frame(rgb)[0]
        face = Face(bbox=tuple(box), score=score, landmarks=marks)
        faces.append((face, rgb))
        side = ROI_SCALE * float((box[2:] - box[:2]).max())
        mesh_crops.append(levelled_crop(rgb, box.reshape(2, 2).mean(axis=0), eye_line_angle(marks), side, INPUT_SIZE)[0])
    sface_inputs = [sface.prepare(rgb, face) for face, rgb in faces]
    dlib_inputs = [dlib_net.prepare(rgb, face) for face, rgb in faces]
    boxes = [dlib.rectangle(*(int(round(v)) for v in face.bbox)) for face, _ in faces]
    fer_inputs = [expression_crop(rgb, face) for face, rgb in faces]
    for frame in frames:
        seconds["yunet"] += timed(lambda: detector._detect_once(frame))
    for crop in mesh_crops:
        seconds["face_mesh"] += timed(lambda: mesh.points(crop[None]))
    for (_, rgb), box in zip(faces, boxes):
        seconds["dlib_landmarks5"] += timed(lambda: dlib_net._shape_predictor(rgb, box))
    seconds["sface"] = timed(lambda: sface.embed(sface_inputs))
    seconds["dlib"] = timed(lambda: dlib_net.embed(dlib_inputs))
    seconds["fer"] = timed(lambda: analyzer.expression.classify(fer_inputs))
    return seconds


@pytest.mark.benchmark
def test_face_analysis_throughput():
    paths = sorted(FACES_DIR.glob("*.jpg")) * REPEAT
    analyzer = FaceAnalyzer(recognizers=("sface", "dlib"))
    analyzer.analyze(paths[:2])  # warm-up: sessions and thread pools
    images = [load_image(path) for path in paths]
    face_recognition = face_recognition_module()
    if face_recognition is not None:
        face_recognition.face_encodings(images[0])  # warm-up

    def reference_pipeline():
        for rgb in images:
            face_recognition.face_encodings(rgb, face_recognition.face_locations(rgb))

    full, reference, raw = [], [], []
    for _ in range(TRIALS):
        evaluations = sum(mesh.evaluations for mesh in analyzer.meshes)
        full.append(timed(lambda: analyzer.analyze(images)))
        mesh_reads = (sum(mesh.evaluations for mesh in analyzer.meshes) - evaluations) / len(images)
        raw.append(raw_model_seconds(analyzer, images))
        if face_recognition is not None:
            reference.append(timed(reference_pipeline))
    paired_ratios = [whole / sum(models.values()) for whole, models in zip(full, raw)]
    full = min(full)
    raw = {name: min(trial[name] for trial in raw) for name in raw[0]}
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "images": len(paths),
        "trials": f"{TRIALS}, interleaved; a/b: median of the trials' own ratios; a/c: fastest of each",
        "mesh_reads_per_face_in_a": round(mesh_reads, 2),
        "a_full_analysis": {"wall_s": round(full, 3), "faces_per_s": round(len(paths) / full, 2)},
        "b_raw_models_one_pass": {"wall_s": round(sum(raw.values()), 3),
                                  "by_model_s": {name: round(s, 3) for name, s in raw.items()}},
        "a_over_b": round(float(np.median(paired_ratios)), 3),
        "a_over_b_per_trial": [round(ratio, 3) for ratio in paired_ratios],
        "a_over_b_of_fastest": round(full / sum(raw.values()), 3),
        "goal_a_over_b": 1.15,
    }
    if reference:
        reference = min(reference)
        report["c_face_recognition_1_3_0"] = {"wall_s": round(reference, 3), "faces_per_s": round(len(paths) / reference, 2)}
        report["a_over_c"] = round(full / reference, 3)
        report["goal_a_over_c"] = 0.5
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
