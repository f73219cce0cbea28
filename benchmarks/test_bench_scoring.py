"""Scoring throughput: images per second for a full `score_manifest` pass over the demo run, cold
(empty cache) and cached, batched (one manifest) and per image (one manifest per line, as a
generator streaming its outputs would), with the raw model-inference time measured in the same run.

    pytest benchmarks/test_bench_scoring.py -m benchmark -s

Goals: cold wall time <= 1.3 x raw model time; cached re-run >= 50 x faster than cold.
Writes benchmarks/results/scoring_cpu.json. Measures the face pipeline (detection, SFace, dlib, pose,
expression) and the harness around it: LPIPS, CLIP and Face Div (features) are switched off, whatever
weights this machine holds, so that the raw model time covers every model that runs (their own
stages are measured by test_bench_ray.py).
"""
import json
import os
import platform
import time
from pathlib import Path

import pytest

from eval.demo.build import build_demo_run
from eval.faces import FaceAnalyzer
from eval.manifest import read_manifest, write_manifest
from eval.score import score_manifest

RESULTS = Path(__file__).parent / "results" / "scoring_cpu.json"


def timed_pass(analyzer: FaceAnalyzer, manifests: list[Path], cache, out: Path) -> dict:
    analyzer.timings.clear()
    start = time.perf_counter()
    for index, manifest in enumerate(manifests):
        result = score_manifest(manifest, out / str(index), analyzer=analyzer, cache=cache, progress=False)
    wall = time.perf_counter() - start
    model = sum(analyzer.timings.values())
    return {"wall_s": round(wall, 4), "model_s": round(model, 4),
            "overhead_ratio": round(wall / model, 3) if model else None, "last_result": result}


@pytest.mark.benchmark
def test_scoring_throughput(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-weights"))
    monkeypatch.setenv("IDAVATAR_CLIP", str(tmp_path / "no-clip"))
    monkeypatch.setenv("IDAVATAR_EFFICIENTNET_LITE0", str(tmp_path / "no-face-div-weights"))
    manifest = build_demo_run(tmp_path / "demo")
    lines = read_manifest(manifest).entries
    singles = [write_manifest(manifest.parent / f"single_{i}.jsonl", [entry]) for i, entry in enumerate(lines)]
    analyzer = FaceAnalyzer(recognizers=("sface", "dlib"))
    score_manifest(singles[0], tmp_path / "warm", analyzer=analyzer, cache=False, progress=False)  # load sessions

    cache_file = tmp_path / "cache.sqlite"
    batched_cold = timed_pass(analyzer, [manifest], cache_file, tmp_path / "b-cold")
    batched_cached = timed_pass(analyzer, [manifest], cache_file, tmp_path / "b-cached")
    # per image, cold: no cache at all, so each line's reference is analysed again, as it would be alone
    per_image_cold = timed_pass(analyzer, singles, False, tmp_path / "p-cold")
    per_image_cached = timed_pass(analyzer, singles, cache_file, tmp_path / "p-cached")
    assert batched_cached["model_s"] == 0 and per_image_cached["model_s"] == 0
    assert batched_cached["last_result"].summary["systems"] == batched_cold["last_result"].summary["systems"]

    def shown(measured: dict) -> dict:
        return {**{k: v for k, v in measured.items() if k != "last_result"},
                "images_per_s": round(len(lines) / measured["wall_s"], 2)}

    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "images": len(lines),
        "distinct_image_files": len({p for e in lines for p in [e.image, *e.references]}),
        "batched_cold": shown(batched_cold),
        "batched_cached": shown(batched_cached),
        "per_image_cold": shown(per_image_cold),
        "per_image_cached": shown(per_image_cached),
        "cached_speedup_batched": round(batched_cold["wall_s"] / batched_cached["wall_s"], 1),
        "goals": {"cold_overhead_ratio_max": 1.3, "cached_speedup_min": 50},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
