"""Face-core throughput: faces per second for `analyze` over the bundled photos, batched and one at a
time, with the raw model-inference time measured in the same run, so harness overhead is a ratio.

    pytest benchmarks/test_bench_faces.py -m benchmark -s

Goal: wall time <= 1.25 x raw model time. Writes benchmarks/results/faces_cpu.json.
"""
import json
import platform
import time
from pathlib import Path

import pytest

from eval.faces import FaceAnalyzer

REPEAT = 3
RESULTS = Path(__file__).parent / "results" / "faces_cpu.json"
FACES_DIR = Path(__file__).resolve().parents[1] / "eval" / "demo" / "faces"


def measure(analyzer: FaceAnalyzer, paths: list[Path], batched: bool) -> dict:
    analyzer.timings.clear()
    start = time.perf_counter()
    if batched:
        results = analyzer.analyze(paths)
    else:
        results = [analyzer.analyze_one(path) for path in paths]
    wall = time.perf_counter() - start
    faces = sum(len(r.faces) for r in results)
    model = sum(analyzer.timings.values())
    return {
        "faces": faces,
        "wall_s": round(wall, 3),
        "model_s": round(model, 3),
        "model_s_by_model": {name: round(seconds, 3) for name, seconds in analyzer.timings.items()},
        "faces_per_s": round(faces / wall, 2),
        "overhead_ratio": round(wall / model, 3),
    }


@pytest.mark.benchmark
def test_face_analysis_throughput():
    paths = sorted(FACES_DIR.glob("*.jpg")) * REPEAT
    analyzer = FaceAnalyzer(recognizers=("sface", "dlib"))
    analyzer.analyze(paths[:2])  # warm-up: sessions and thread pools
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs",
        "images": len(paths),
        "batched": measure(analyzer, paths, batched=True),
        "one_at_a_time": measure(analyzer, paths, batched=False),
        "goal_overhead_ratio": 1.25,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    assert report["batched"]["faces"] == len(paths)
