"""The Ray engine on a real local Ray cluster (started here, 2 CPUs): the same scores as the local
engine on the demo (also with CLIP and LPIPS as Ray stages) and on a generated 2,000-line run, through a
killed worker and a killed driver."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pandas as pd
import psutil
import pytest
import ray

from eval.cache import ResultCache
from eval.demo.scale import build_scaled_run
from eval.engines.ray import RayEngine
from eval.files import sha256_file
from eval.manifest import read_manifest
from eval.outputs import RUN_ID
from eval.score import main, score_manifest
from eval.scoring.analysis import CachedFaceAnalysis, Miss

pytestmark = pytest.mark.slow

GENERATED_LINES, GENERATED_DISTINCT = 2000, 20
NUMERIC = ["id_sim_sface", "id_sim_dlib", "yaw", "pitch", "roll", "d_yaw", "d_pitch", "clip_t", "clip_i"]


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local cluster with 2 CPUs, torn down after this module (never `ray stop`: other
    clusters on this machine are not ours)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return build_scaled_run(tmp_path_factory.mktemp("generated"), GENERATED_LINES, GENERATED_DISTINCT)


@pytest.fixture(scope="module")
def generated_local(generated, eval_analyzer, hide_optional_weights, tmp_path_factory):
    """The generated run scored cold by the local engine (its cache holds the local records)."""
    folder = tmp_path_factory.mktemp("generated-local")
    with hide_optional_weights():
        result = score_manifest(generated, folder / "scores", analyzer=eval_analyzer,
                                cache=folder / "cache.sqlite", progress=False)
    result.cache_path = folder / "cache.sqlite"
    return result


def assert_same_scores(ray_result, local_result):
    """Equal scores.parquet and summary.json, apart from what names the run (its id, its time)."""
    ours, theirs = ray_result.scores, local_result.scores
    assert list(ours.columns) == list(theirs.columns) and len(ours) == len(theirs)
    for column in ours.columns.drop(RUN_ID):
        if column in NUMERIC:
            np.testing.assert_allclose(ours[column].to_numpy(float), theirs[column].to_numpy(float),
                                       atol=1e-6, rtol=0, equal_nan=True, err_msg=column)
        else:
            pd.testing.assert_series_equal(ours[column], theirs[column])
    stamp = {"created": None, RUN_ID: None}
    assert {**ray_result.summary, **stamp} == {**local_result.summary, **stamp}
    saved = json.loads(ray_result.summary_path.read_text())
    assert {**saved, **stamp} == {**json.loads(local_result.summary_path.read_text()), **stamp}


def test_ray_options_are_checked_before_anything_runs(demo_manifest, capsys):
    for argv, message in [(["--workers", "2"], "need --engine ray"),
                          (["--engine", "ray", "--workers", "0"], "0: must be at least 1"),
                          (["--engine", "ray", "--gpus-per-worker", "-1"], "-1: must be at least 0")]:
        with pytest.raises(SystemExit):
            main([str(demo_manifest), *argv])
        assert message in capsys.readouterr().err


def test_a_stage_with_nothing_to_do_starts_no_cluster(eval_analyzer):
    engine = RayEngine(eval_analyzer)  # no address: it would start a private cluster
    assert list(engine.map_stage(len, iter([]), 4)) == [] and not engine._started
    engine.close()


def test_demo_scores_equal_the_local_engine(ray_cluster, demo_scores, demo_manifest, eval_analyzer,
                                            hide_optional_weights, tmp_path):
    with hide_optional_weights():  # as when the demo was scored locally
        result = score_manifest(demo_manifest, tmp_path / "ray", analyzer=eval_analyzer, cache=False,
                                progress=False, engine="ray", engine_options={"workers": 2, "batch_size": 4})
    assert_same_scores(result, demo_scores)
    assert result.summary["status_counts"] == {"ok": 29}


def test_clip_and_face_div_run_as_their_own_ray_stages_with_the_local_numbers(
        ray_cluster, demo_manifest, eval_analyzer, tiny_clip, torch_home_with_alexnet, tmp_path, monkeypatch):
    # stand-in CLIP and AlexNet weights: only the mechanics (same numbers on both engines) are asserted
    local = score_manifest(demo_manifest, tmp_path / "local", analyzer=eval_analyzer, cache=False,
                           clip_model=str(tiny_clip), progress=False)
    stages, real = [], RayEngine.map_stage
    monkeypatch.setattr(RayEngine, "map_stage", lambda engine, function, items, batch_size:
                        stages.append((type(function.__self__).__name__, batch_size)) or real(engine, function, items, batch_size))
    result = score_manifest(demo_manifest, tmp_path / "ray", analyzer=eval_analyzer, cache=False,
                            clip_model=str(tiny_clip), progress=False, engine="ray",
                            engine_options={"workers": 2, "batch_size": 4, "transport": "bytes"})
    assert sorted(stages) == [("ClipScorer", 16), ("FaceFeatures", 1), ("FaceLpips", 1)]
    assert result.scores["clip_i"].notna().all()
    assert_same_scores(result, local)


def test_generated_run_scores_equal_the_local_engine_by_bytes(ray_cluster, generated, generated_local,
                                                              eval_analyzer, hide_optional_weights, tmp_path):
    # by bytes: the path a cluster without a shared filesystem takes (auto picks paths here)
    with hide_optional_weights():
        result = score_manifest(generated, tmp_path / "ray", analyzer=eval_analyzer, cache=False, progress=False,
                                engine="ray", engine_options={"workers": 2, "batch_size": 8, "transport": "bytes"})
    assert len(result.scores) == GENERATED_LINES
    assert_same_scores(result, generated_local)


def _image_paths(manifest_path):
    manifest = read_manifest(manifest_path)
    paths = [manifest.root / e.image for e in manifest.entries] + [manifest.root / r for e in manifest.entries
                                                                    for r in e.references]
    return list(dict.fromkeys(paths))


def _face_workers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "FaceWorker" in " ".join(p.cmdline())]


def test_a_killed_worker_is_retried_and_the_records_are_identical(ray_cluster, generated, generated_local,
                                                                  eval_analyzer):
    misses = [Miss(path, sha256_file(path)) for path in _image_paths(generated)]
    engine = RayEngine(eval_analyzer, workers=2, batch_size=2)
    chunks, killed = [], None
    for chunk in engine.analyze_chunks(misses):
        chunks.append(chunk)
        if killed is None:
            killed = _face_workers()[0]
            killed.send_signal(signal.SIGKILL)
            killed.wait(30)
            chunks_at_kill = len(chunks)
    assert killed is not None and not killed.is_running()
    assert len(chunks) > chunks_at_kill  # the run went on after the kill
    records = {miss.sha256: (face, vectors) for chunk in chunks for miss, face, vectors in chunk}
    assert sorted(records) == sorted({miss.sha256 for miss in misses})

    local = ResultCache(generated_local.cache_path)
    namespaces = CachedFaceAnalysis(eval_analyzer, local)
    local_faces = local.get_many(namespaces.faces_namespace, list(records))
    local_crops = local.get_many(namespaces.crops_namespace, list(records))
    for sha256, (face, vectors) in records.items():
        face = dict(face)
        if "aligned" in face:  # the driver keeps the crop in a record of its own
            np.testing.assert_array_equal(face.pop("aligned"), local_crops[sha256]["aligned"])
        assert face.keys() == local_faces[sha256].keys()
        for key, value in face.items():
            np.testing.assert_array_equal(value, local_faces[sha256][key], err_msg=key)
        for name, namespace in namespaces.embed_namespaces.items():  # batch sizes differ: float32 rounding
            np.testing.assert_allclose(_unit(vectors[name]), _unit(local.get(namespace, sha256)["vector"]),
                                       atol=1e-6, rtol=0)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _cached_faces(cache_path, analyzer) -> int:
    if not cache_path.exists():
        return 0
    namespace = CachedFaceAnalysis(analyzer, ResultCache(None)).faces_namespace
    with sqlite3.connect(cache_path, timeout=30) as db:
        return db.execute("SELECT COUNT(*) FROM records_v2 WHERE namespace = ?", (namespace,)).fetchone()[0]


def test_a_killed_driver_keeps_the_finished_batches(ray_cluster, generated, generated_local, eval_analyzer,
                                                    hide_optional_weights, tmp_path):
    cache = tmp_path / "cache.sqlite"
    total = len(set(sha256_file(p) for p in _image_paths(generated)))
    driver = subprocess.Popen([sys.executable, "-m", "eval.score", str(generated), "--out", str(tmp_path / "out"),
                               "--cache", str(cache), "--quiet", "--engine", "ray", "--ray-address", ray_cluster,
                               "--workers", "2", "--batch-size", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + 300
    while _cached_faces(cache, eval_analyzer) < 4 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    kept = _cached_faces(cache, eval_analyzer)
    assert 4 <= kept < total, driver.stderr.read().decode()[-2000:]
    assert not (tmp_path / "out" / "summary.json").exists()

    before = Counter(eval_analyzer.calls)
    with hide_optional_weights():
        result = score_manifest(generated, tmp_path / "again", analyzer=eval_analyzer, cache=cache, progress=False)
    assert (Counter(eval_analyzer.calls) - before)["analyze"] == total - kept
    assert_same_scores(result, generated_local)
