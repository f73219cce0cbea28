"""Report rendering cost: how time and file size grow with the number of images.

    pytest benchmarks/test_gates_report_benchmark.py -m benchmark -s

The demo's scores are replicated onto distinct copies of its images (so no thumbnail is reused) at
two sizes; the run measures seconds and bytes per image at each, and the share of the time spent
shrinking the outputs to thumbnails. Ratios within one run, no timed assertion. Writes artifacts/report-benchmark.json.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from eval.report import thumbnails
from eval.report.gates import load_gate_spec
from eval.report.render import render_report, write_report
from eval.report.run import load_run

SIZES = (29, 116)  # the demo once, and four times over
RESULTS = Path(__file__).resolve().parents[1] / "artifacts" / "report-benchmark.json"


def replicated(run, copies: int, folder: Path):
    """The run with each image copied `copies` times under `folder` (scores rows repeated)."""
    frames = []
    for copy in range(copies):
        rows = run.scores.copy()
        images = []
        for image in rows["image"]:
            target = folder / f"c{copy}" / image
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.path_of(image), target)
            images.append(str(target))
        rows["image"] = images  # absolute: run.path_of() keeps them as they are
        rows["seed"] = rows["seed"] + 1000 * copy
        frames.append(rows)
    return replace(run, scores=pd.concat(frames, ignore_index=True))


def measure(run, out: Path) -> dict:
    thumbnails._cached.cache_clear()
    start = time.perf_counter()
    for image in run.scores["image"]:
        thumbnails.thumbnail_data_uri(run.path_of(image))
    thumbnail_seconds = time.perf_counter() - start
    thumbnails._cached.cache_clear()
    start = time.perf_counter()
    path = write_report(render_report(run, load_gate_spec()), out)
    wall = time.perf_counter() - start
    images, size = len(run.scores), path.stat().st_size
    return {"images": images, "seconds": round(wall, 3), "seconds_per_image": round(wall / images, 4),
            "bytes": size, "bytes_per_image": size // images,
            "output_thumbnail_share_of_time": round(thumbnail_seconds / wall, 3)}


@pytest.mark.benchmark
def test_report_cost_per_image_at_two_sizes(tmp_path):
    demo = load_run(None, progress=False)
    rows = []
    for size in SIZES:
        copies = size // len(demo.scores)
        run = replicated(demo, copies, tmp_path / f"x{copies}")
        rows.append(measure(run, tmp_path / f"report-{size}.html"))
    small, large = rows
    result = {
        "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
        "runs": rows,
        "time_per_image_ratio_large_vs_small": round(large["seconds_per_image"] / small["seconds_per_image"], 3),
        "bytes_per_image_ratio_large_vs_small": round(large["bytes_per_image"] / small["bytes_per_image"], 3),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    assert large["images"] == 4 * small["images"]
