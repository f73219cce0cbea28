"""Scoring on Ray against the local engine: the same 400 distinct images, cold, on this machine.

    pytest benchmarks/test_bench_ray.py -m benchmark -s

One run (about 4 minutes on an idle 2-core machine) measures, for the local engine and for Ray with 1
and 2 workers (a private local cluster with 2 CPUs, started and given one tiny dataset before the
timed passes, so that Ray Data's own actors are up as on any running cluster), each stage
on its own, cold:
- `face`: the face core on the 405 images (400 distinct, 5 references) into an empty cache;
- `other`: the rest of a score run once the faces are cached: Face Div (features) as its own stage
  (a Ray stage on Ray), the rows, the bootstrap summary, the outputs. CLIP and LPIPS are off (their
  weights are not shipped), as in test_bench_scoring.py.
Per stage and in total: wall time, throughput and CPU seconds of every process involved (the driver,
the Ray workers of each stage, Ray's own processes: `cpu_s_by_process`; a stage's actors may
linger into the next one), a figure the other jobs on a
shared machine distort far less than wall time. From these: the Ray overhead ratio (Ray 1 worker /
local, goal <= 1.15) in CPU seconds and in wall time, and the 2-worker speed-up over 1 worker in wall
time (goal >= 1.7 on 2 free cores). Also: the machine's load average, the peak memory of the Ray
workers (per kind of actor) and of a `python -m eval.score --engine ray` driver at 2,000 and 20,000 lines (faces cached,
Face Div off: the driver's own work), and a projection for an 8-GPU node from the per-image CPU
seconds measured here, labelled as a projection. Writes benchmarks/results/ray_cpu.json.
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

from eval.cache import ResultCache
from eval.demo.scale import build_scaled_run
from eval.engines import make_engine
from eval.faces import FaceAnalyzer
from eval.manifest import read_manifest
from eval.outputs import RUN_ID
from eval.score import score_manifest
from eval.scoring.analysis import CachedFaceAnalysis
from eval.scoring.rows import manifest_rows

RESULTS = Path(__file__).parent / "results" / "ray_cpu.json"
DISTINCT = 400
IMAGES = DISTINCT + 5  # the 400 images and the 5 subjects' references
BATCH_SIZE = 16  # images per Ray batch of the face stage
ONNX_MODELS = ("sface", "arcface")  # onnxruntime-gpu runs these on the GPU
PROJECTED_NODE = {"gpus": 8, "cpu_cores": 96}  # a typical 8-GPU node; an assumption, not this machine
WORKER_KINDS = {"FaceWorker": "face_workers", "StageWorker": "stage_workers"}


def worker_kind(process: psutil.Process) -> str | None:
    """Which kind of Ray stage actor `process` is (a value of WORKER_KINDS), or None; psutil.Error
    when it has gone."""
    command = " ".join(process.cmdline())
    return next((kind for name, kind in WORKER_KINDS.items() if name in command), None)


class ProcessMeter:
    """CPU seconds used by this process and all its descendants (the Ray cluster, its workers) while
    the block runs, by kind of process, and the peak resident memory of the Ray workers; sampled
    every 0.2 s. CPU seconds, unlike wall time, do not depend much on what else the machine runs."""

    def __init__(self):
        self.peak_bytes: dict[str, int] = {}
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._kind: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[int, float]:
        seen = {}
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()
                seen[process.pid] = times.user + times.system
                kind = worker_kind(process)
                if kind:
                    self._kind[process.pid] = kind
                    self.peak_bytes[kind] = max(self.peak_bytes.get(kind, 0), process.memory_info().rss)
                self._kind.setdefault(process.pid, "driver" if process.pid == me.pid else "ray_own_processes")
            except psutil.Error:
                pass
        return seen

    def _run(self):
        while not self._stop.wait(0.2):
            self._last.update(self._sample())

    def by_kind(self) -> dict[str, float]:
        out = {kind: 0.0 for kind in ("driver", *WORKER_KINDS.values(), "ray_own_processes")}
        for pid, seconds in self._last.items():
            out[self._kind[pid]] += seconds - self._start.get(pid, 0.0)
        return {kind: round(seconds, 2) for kind, seconds in out.items() if seconds or kind == "driver"}

    def __enter__(self):
        self._start = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()
        self._last.update(self._sample())


def measured(meter: ProcessMeter, wall: float) -> dict:
    by_kind = meter.by_kind()
    cpu = sum(by_kind.values())
    return {"wall_s": round(wall, 2), "images_per_s": round(IMAGES / wall, 2), "cpu_s": round(cpu, 2),
            "cpu_s_per_image": round(cpu / IMAGES, 4), "cpu_s_by_process": by_kind,
            "worker_peak_mib": {kind: round(peak / 2**20, 1) for kind, peak in meter.peak_bytes.items()} or None}


def image_paths(manifest: Path) -> list[Path]:
    _, images, references = manifest_rows(read_manifest(manifest))
    return [p for p in images if p] + [p for refs in references for p in refs]


def wait_for_stage_actors_to_exit(timeout_s: float = 60) -> None:
    """Ray Data stops a finished stage's actors in the background; each timed stage starts once the
    previous stage's actors are gone, as a run's first stage would on a running cluster."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and stage_actors_running():
        time.sleep(0.2)


def stage_actors_running() -> bool:
    for process in psutil.Process().children(recursive=True):
        try:
            if worker_kind(process):
                return True
        except psutil.Error:  # gone meanwhile
            continue
    return False


def staged_pass(manifest: Path, folder: Path, analyzer: FaceAnalyzer, engine) -> dict:
    """The face stage cold into a new cache file, then the other stages with the faces cached."""
    cache = folder / "cache.sqlite"
    folder.mkdir()
    stages = {}
    wait_for_stage_actors_to_exit()
    start = time.perf_counter()
    with ProcessMeter() as meter:
        CachedFaceAnalysis(analyzer, ResultCache(cache), engine).analyze(image_paths(manifest))
    stages["face"] = measured(meter, time.perf_counter() - start)
    wait_for_stage_actors_to_exit()
    start = time.perf_counter()
    with ProcessMeter() as meter:
        result = score_manifest(manifest, folder / "scores", analyzer=analyzer, cache=cache, progress=False,
                                engine=engine)
    stages["other"] = measured(meter, time.perf_counter() - start)
    stages["total"] = {key: round(stages["face"][key] + stages["other"][key], 2) for key in ("wall_s", "cpu_s")}
    stages["total"]["images_per_s"] = round(IMAGES / stages["total"]["wall_s"], 2)
    return {**stages, "result": result}


# Linux folds the memory of the process that forked into the child's ru_maxrss (at exec), so the
# driver is started by this small launcher, never by the benchmark's own large process.
LAUNCHER = """import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)"""


def driver_peak_mib(manifest: Path, cache: Path, address: str, out: Path) -> float:
    """Peak resident memory of a `python -m eval.score --engine ray` driver process, Face Div off."""
    command = [sys.executable, "-m", "eval.score", str(manifest), "--out", str(out), "--cache", str(cache),
               "--quiet", "--engine", "ray", "--ray-address", address]
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, check=True,
                              env={**os.environ, "IDAVATAR_EFFICIENTNET_LITE0": str(out / "no-face-div-weights")})
    code, max_rss_kib = map(int, launched.stdout.split())
    assert code == 0
    return round(max_rss_kib / 1024, 1)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


@pytest.mark.benchmark
def test_ray_against_local(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-weights"))  # face pipeline and Face Div
    monkeypatch.setenv("IDAVATAR_CLIP", str(tmp_path / "no-clip"))         # (features) only
    began = time.perf_counter()
    load_start = round(os.getloadavg()[0], 1)
    manifest = build_scaled_run(tmp_path / "run", lines=DISTINCT, distinct=DISTINCT)
    analyzer = FaceAnalyzer(recognizers=("sface", "dlib"))
    warm_up = build_scaled_run(tmp_path / "warm", lines=10, distinct=10)
    score_manifest(warm_up, tmp_path / "warm", analyzer=analyzer, cache=False, progress=False)  # load sessions
    analyzer.timings.clear()

    local = staged_pass(manifest, tmp_path / "local", analyzer, make_engine("local", analyzer))
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Ray Data starts its own singleton actors (stats, autoscaling coordinator, location tracker:
    # about 2.3 CPU seconds) on a cluster's first dataset; a running cluster has them already.
    ray.data.range(2).map_batches(lambda batch: batch).materialize()
    cluster_start_s = round(time.perf_counter() - start, 2)
    try:
        address = ray.get_runtime_context().gcs_address
        runs = {}
        for workers in (1, 2):
            engine = make_engine("ray", analyzer, workers=workers, batch_size=BATCH_SIZE)
            runs[workers] = staged_pass(manifest, tmp_path / f"ray{workers}", analyzer, engine)
            stamp = {"created": None, RUN_ID: None}
            assert {**runs[workers]["result"].summary, **stamp} == {**local["result"].summary, **stamp}, workers

        cache = tmp_path / "local" / "cache.sqlite"  # the local pass filled it
        driver = {}
        for lines in (2000, 20000):
            big = build_scaled_run(tmp_path / "run", lines=lines, distinct=DISTINCT)
            driver[f"{lines}_lines_mib"] = driver_peak_mib(big, cache, address, tmp_path / f"driver{lines}")
    finally:
        ray.shutdown()

    model_s = dict(analyzer.timings)
    model_total = sum(model_s.values())
    share = {model: round(seconds / model_total, 3) for model, seconds in model_s.items()}
    ray_cpu_s = runs[1]["face"]["cpu_s_per_image"]  # face stage on Ray, driver and cluster included
    on_gpu = sum(share.get(m, 0) for m in ONNX_MODELS) * local["face"]["cpu_s_per_image"]
    actors = PROJECTED_NODE["cpu_cores"] - 2  # leave a core for the driver and one for Ray's own processes
    report = {
        "command": "pytest benchmarks/test_bench_ray.py -m benchmark -s",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 1)},
        "images": IMAGES,
        "face_stage_batch_size": BATCH_SIZE,
        "stages": {"face": "face core, cold, into an empty cache",
                   "other": "the rest of the run with faces cached: Face Div (features) stage, rows, summary, outputs"},
        "ray_cluster_start_s": cluster_start_s,
        "local": {k: v for k, v in local.items() if k != "result"},
        "ray_1_worker": {k: v for k, v in runs[1].items() if k != "result"},
        "ray_2_workers": {k: v for k, v in runs[2].items() if k != "result"},
        "ray_overhead_ratio_cpu": {stage: ratio(runs[1][stage]["cpu_s"], local[stage]["cpu_s"])
                                   for stage in ("face", "other", "total")},
        "ray_overhead_ratio_wall": {stage: ratio(runs[1][stage]["wall_s"], local[stage]["wall_s"])
                                    for stage in ("face", "other", "total")},
        "speedup_2_workers_wall": {stage: ratio(runs[1][stage]["wall_s"], runs[2][stage]["wall_s"])
                                   for stage in ("face", "other", "total")},
        "driver_peak": {**driver, "note": "faces cached, Face Div off: the driver's own work"},
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
        "benchmark_wall_s": round(time.perf_counter() - began, 1),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
