"""Caching: unchanged runs cost no model calls, new images cost exactly themselves, and a changed
model recomputes only its own column. Counted in model calls, not timed."""
import os
import sqlite3
from collections import Counter

import pytest
from PIL import Image, ImageOps

from eval.faces import FaceAnalyzer
from eval.manifest import ManifestEntry, read_manifest, write_manifest
from eval.models import REGISTER
from eval.score import score_manifest
from eval.scoring import analysis
from eval.scoring.analysis import fingerprint

pytestmark = pytest.mark.slow


def _rescore(manifest, analyzer, cache, out):
    before = Counter(analyzer.calls)
    result = score_manifest(manifest, out, analyzer=analyzer, cache=cache, progress=False)
    return result, Counter(analyzer.calls) - before


def test_cold_run_analyses_each_distinct_image_once(demo_scores):
    # 29 lines + 3 references, but each bundled photo is analysed once (22 distinct files)
    distinct = {p for p in (demo_scores.out_dir.parent / "photos").iterdir()} | {
        p for p in (demo_scores.out_dir.parent / "copy-paste").iterdir()}
    assert demo_scores.cold_calls["analyze"] == len(distinct) == 22
    assert demo_scores.cold_calls["embed:sface"] == 22


def test_unchanged_run_costs_no_model_call_and_gives_the_same_scores(demo_scores, demo_manifest, eval_analyzer,
                                                                    score_cache, tmp_path, hide_optional_weights):
    with hide_optional_weights():  # as when the demo was scored
        again, calls = _rescore(demo_manifest, eval_analyzer, score_cache, tmp_path / "again")
    assert +calls == Counter()
    columns = ["id_sim_sface", "id_sim_dlib", "d_yaw", "d_pitch", "copy_paste", "status"]
    assert again.scores[columns].equals(demo_scores.scores[columns])
    assert again.summary["systems"] == demo_scores.summary["systems"]


def test_new_images_cost_exactly_themselves(demo_scores, demo_manifest, eval_analyzer, score_cache, tmp_path):
    manifest = read_manifest(demo_manifest)
    root = demo_manifest.parent
    extra = []
    for seed, entry in enumerate(e for e in manifest.entries if e.system == "ideal"):
        mirrored = f"mirrored/{seed}.png"
        (root / "mirrored").mkdir(exist_ok=True)
        ImageOps.mirror(Image.open(root / entry.image).convert("RGB")).save(root / mirrored)
        extra.append(ManifestEntry(**{**entry.model_dump(), "system": "mirror", "image": mirrored}))
    grown = write_manifest(root / "grown.jsonl", [*manifest.entries, *extra])
    result, calls = _rescore(grown, eval_analyzer, score_cache, tmp_path / "grown")
    assert calls == Counter({"analyze": len(extra), "embed:sface": len(extra), "embed:dlib": len(extra)})
    assert result.summary["systems"]["mirror"]["n_images"] == len(extra) == 5


def test_a_changed_model_recomputes_only_its_column(demo_scores, demo_manifest, eval_analyzer, score_cache,
                                                    tmp_path, monkeypatch):
    real = analysis.fingerprint

    def dlib_retrained(model_ids):
        return real(model_ids) + ("-retrained" if "dlib" in model_ids else "")

    monkeypatch.setattr(analysis, "fingerprint", dlib_retrained)
    result, calls = _rescore(demo_manifest, eval_analyzer, score_cache, tmp_path / "dlib-changed")
    assert calls == Counter({"embed:dlib": 22})  # no detection, no SFace: only dlib's embeddings
    assert result.scores["id_sim_dlib"].round(5).equals(demo_scores.scores["id_sim_dlib"].round(5))


def test_fingerprint_follows_the_weight_file(tmp_path, monkeypatch):
    weights = tmp_path / REGISTER["sface"].filename
    monkeypatch.setenv("IDAVATAR_SFACE", str(weights))
    weights.write_bytes(b"version one")
    first = fingerprint(["sface"])
    weights.write_bytes(b"version two")
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new mtime even within one clock tick
    assert fingerprint(["sface"]) != first


def test_crops_live_in_the_cache_not_in_the_records(faces_dir, eval_analyzer, tmp_path):
    """The driver's records carry no crop; `crops` reads exactly the ones asked for, equal to the
    face core's, and a crop the cache lost is computed again (one analysis), not silently missing."""
    from eval.cache import ResultCache
    from eval.scoring.analysis import CachedFaceAnalysis, ImageRecord

    paths = sorted(faces_dir.glob("*.jpg"))[:3]
    cache = ResultCache(tmp_path / "c.sqlite")
    faces = CachedFaceAnalysis(eval_analyzer, cache)
    records = faces.analyze(paths)
    assert not any(hasattr(record, "aligned") for record in records.values())
    assert cache.count(faces.crops_namespace) == 3
    expected = [result.main_face.aligned for result in FaceAnalyzer(recognizers=()).analyze(paths)]
    crops = faces.crops([records[path] for path in paths] + [ImageRecord(path=tmp_path / "none")])
    assert all((crop == want).all() for crop, want in zip(crops, expected)) and crops[3] is None
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        db.execute("DELETE FROM records_v2 WHERE namespace = ? AND content = ?", (faces.crops_namespace, records[paths[1]].sha256))
    before = Counter(eval_analyzer.calls)
    again = CachedFaceAnalysis(eval_analyzer, cache).crops([records[paths[1]]])
    assert (again[0] == expected[1]).all() and (Counter(eval_analyzer.calls) - before)["analyze"] == 1
    assert cache.count(faces.crops_namespace) == 3
