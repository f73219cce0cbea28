"""Scoring on Ray against the local engine: the same 400 distinct images, cold, on this machine.

    pytest benchmarks/test_bench_ray.py -m benchmark -s

Measures, in one run: throughput of the local engine and of Ray with 1 and 2 workers (a private
local cluster with 2 CPUs, started before the timed passes), the Ray overhead ratio (Ray 1 worker /
local; goal <= 1.15) in wall time and in CPU seconds of every process involved (the driver, Ray's
processes, its workers: a figure the other jobs on a shared machine do not distort), the 2-worker
speed-up over 1 worker in wall time (goal >= 1.7 on 2 free cores), the machine's load average;
peak memory of the Ray workers and of the driver (2,000 and 20,000 lines, the face analyses cached,
so the driver's own work); and the CPU seconds per image from which `projection_8_gpu_node` is
computed — a projection, not a measurement. Writes benchmarks/results/ray_cpu.json.
"""
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray

from eval.demo.scale import build_scaled_run
from eval.faces import FaceAnalyzer
from eval.outputs import RUN_ID
from eval.score import score_manifest

RESULTS = Path(__file__).parent / "results" / "ray_cpu.json"
DISTINCT = 400
IMAGES = DISTINCT + 5  # the 400 images and the 5 subjects' references
ONNX_MODELS = ("sface", "arcface")  # onnxruntime-gpu runs these on the GPU
PROJECTED_NODE = {"gpus": 8, "cpu_cores": 96}  # a typical 8-GPU node; an assumption, not this machine


class ProcessMeter:
    """CPU seconds used by this process and all its descendants (the Ray cluster, its workers) while
    the block runs, and the peak resident memory of the FaceWorker actors; sampled every 0.2 s.

    CPU seconds, unlike wall time, do not depend on what else the shared machine is running."""

    def __init__(self):
        self.worker_peak_bytes = 0
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[int, float]:
        seen = {}
        for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            try:
                times = process.cpu_times()
                seen[process.pid] = times.user + times.system
                if "FaceWorker" in " ".join(process.cmdline()):
                    self.worker_peak_bytes = max(self.worker_peak_bytes, process.memory_info().rss)
            except psutil.Error:
                pass
        return seen

    def _run(self):
        while not self._stop.wait(0.2):
            self._last.update(self._sample())

    @property
    def cpu_s(self) -> float:
        return sum(seconds - self._start.get(pid, 0.0) for pid, seconds in self._last.items())

    def __enter__(self):
        self._start = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()
        self._last.update(self._sample())


def timed(manifest: Path, out: Path, analyzer: FaceAnalyzer, engine: str, **options) -> dict:
    """A cold pass into a new, empty cache file (so each pass also pays its cache writes)."""
    analyzer.timings.clear()
    start = time.perf_counter()
    with ProcessMeter() as meter:
        result = score_manifest(manifest, out, analyzer=analyzer, cache=out / "cache.sqlite", progress=False,
                                engine=engine, engine_options=options)
    wall = time.perf_counter() - start
    measured = {"wall_s": round(wall, 2), "images_per_s": round(IMAGES / wall, 2),
                "cpu_s": round(meter.cpu_s, 2), "cpu_s_per_image": round(meter.cpu_s / IMAGES, 4)}
    if engine == "ray":
        measured["worker_peak_mib"] = round(meter.worker_peak_bytes / 2**20, 1)
    return {**measured, "result": result}


def driver_peak_mib(manifest: Path, cache: Path, address: str, out: Path) -> float:
    """Peak resident memory of a `python -m eval.score --engine ray` driver process."""
    process = subprocess.Popen([sys.executable, "-m", "eval.score", str(manifest), "--out", str(out),
                                "--cache", str(cache), "--quiet", "--engine", "ray", "--ray-address", address],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return round(usage.ru_maxrss / 1024, 1)


@pytest.mark.benchmark
def test_ray_against_local(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-weights"))  # face pipeline only, as in
    monkeypatch.setenv("IDAVATAR_CLIP", str(tmp_path / "no-clip"))         # test_bench_scoring.py
    load_start = round(os.getloadavg()[0], 1)
    manifest = build_scaled_run(tmp_path / "run", lines=DISTINCT, distinct=DISTINCT)
    analyzer = FaceAnalyzer(recognizers=("sface", "dlib"))
    warm_up = build_scaled_run(tmp_path / "warm", lines=10, distinct=10)
    score_manifest(warm_up, tmp_path / "warm", analyzer=analyzer, cache=False, progress=False)  # load sessions

    local = timed(manifest, tmp_path / "local", analyzer, "local")
    model_s = dict(analyzer.timings)
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    cluster_start_s = round(time.perf_counter() - start, 2)
    try:
        address = ray.get_runtime_context().gcs_address
        runs = {workers: timed(manifest, tmp_path / f"ray{workers}", analyzer, "ray", workers=workers, batch_size=8)
                for workers in (1, 2)}
        for workers, run in runs.items():
            stamp = {"created": None, RUN_ID: None}
            assert {**run["result"].summary, **stamp} == {**local["result"].summary, **stamp}, workers

        cache = tmp_path / "local" / "cache.sqlite"  # the local pass filled it
        driver = {}
        for lines in (2000, 20000):
            big = build_scaled_run(tmp_path / "run", lines=lines, distinct=DISTINCT)
            driver[f"{lines}_lines_mib"] = driver_peak_mib(big, cache, address, tmp_path / f"driver{lines}")
    finally:
        ray.shutdown()

    model_total = sum(model_s.values())
    share = {model: round(seconds / model_total, 3) for model, seconds in model_s.items()}
    ray_cpu_s = runs[1]["cpu_s_per_image"]  # face stage on Ray, driver and cluster included
    on_gpu = sum(share.get(m, 0) for m in ONNX_MODELS) * local["cpu_s_per_image"]
    actors = PROJECTED_NODE["cpu_cores"] - 2  # leave a core for the driver and one for Ray's own processes
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, shared",
        "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 1)},
        "images": IMAGES,
        "ray_cluster_start_s": cluster_start_s,
        "local": {k: v for k, v in local.items() if k != "result"},
        "ray_1_worker": {k: v for k, v in runs[1].items() if k != "result"},
        "ray_2_workers": {k: v for k, v in runs[2].items() if k != "result"},
        "ray_overhead_ratio_wall": round(runs[1]["wall_s"] / local["wall_s"], 3),
        "ray_overhead_ratio_cpu": round(runs[1]["cpu_s"] / local["cpu_s"], 3),
        "speedup_2_workers_wall": round(runs[1]["wall_s"] / runs[2]["wall_s"], 2),
        "driver_peak": driver,
        "model_time_share": share,
        "projection_8_gpu_node": {
            "label": "PROJECTION from the CPU seconds per image measured here, not a measurement",
            "assumes": {**PROJECTED_NODE, "actors": actors, "gpus_per_worker": round(PROJECTED_NODE["gpus"] / actors, 3),
                        "scaling": "linear in actors (an upper bound)", "ray_cpu_s_per_image": ray_cpu_s,
                        "onnx_share_moved_to_gpu_s_per_image": round(on_gpu, 4)},
            "images_per_s_cpu_only": round(actors / ray_cpu_s, 1),
            "images_per_s_sface_on_gpu": round(actors / (ray_cpu_s - on_gpu), 1),
        },
        "goals": {"ray_overhead_ratio_max": 1.15, "speedup_2_workers_min": 1.7},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
