"""Identity on real photos: every same-person pair above, every different-person pair below the threshold."""
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from eval.faces import default_threshold, similarity

RECOGNIZERS = ["sface", "dlib"]


def person(stem: str) -> str:
    return stem.split("_")[0]


def pairs(bundled, same: bool):
    for a, b in itertools.combinations(sorted(bundled), 2):
        if (person(a) == person(b)) == same:
            yield a, b


def test_every_bundled_photo_has_exactly_one_face(bundled):
    assert len(bundled) == 10
    for stem, result in bundled.items():
        assert result.error is None, (stem, result.error)
        assert len(result.faces) == 1, stem
        assert result.main_face.aligned.shape == (112, 112, 3)


@pytest.mark.parametrize("recognizer", RECOGNIZERS)
def test_same_person_pairs_score_above_threshold(bundled, recognizer):
    scores = {
        (a, b): similarity(recognizer, bundled[a].main_face.embeddings[recognizer], bundled[b].main_face.embeddings[recognizer])
        for a, b in pairs(bundled, same=True)
    }
    assert len(scores) == 8  # 1 macron + 1 ardern + 6 obama pairs
    low = {pair: round(score, 3) for pair, score in scores.items() if score < default_threshold(recognizer)}
    assert not low, f"{recognizer}: same-person pairs below {default_threshold(recognizer)}: {low}"


@pytest.mark.parametrize("recognizer", RECOGNIZERS)
def test_different_person_pairs_score_below_threshold(bundled, recognizer):
    scores = {
        (a, b): similarity(recognizer, bundled[a].main_face.embeddings[recognizer], bundled[b].main_face.embeddings[recognizer])
        for a, b in pairs(bundled, same=False)
    }
    assert len(scores) == 45 - 8
    high = {pair: round(score, 3) for pair, score in scores.items() if score >= default_threshold(recognizer)}
    assert not high, f"{recognizer}: different-person pairs at or above {default_threshold(recognizer)}: {high}"


def test_dlib_similarity_is_derived_from_l2_distance(bundled):
    a, b = bundled["obama_oval"].main_face.embeddings["dlib"], bundled["obama_flag"].main_face.embeddings["dlib"]
    distance = float(np.linalg.norm(a - b))
    assert similarity("dlib", a, b) == pytest.approx(1 - distance / 1.2)
    assert default_threshold("dlib") == pytest.approx(0.5)  # dlib's published L2 threshold 0.6


def test_batched_and_single_analysis_agree(analyzer, faces_dir, bundled):
    single = analyzer.analyze_one(faces_dir / "macron_2014.jpg")
    batched = bundled["macron_2014"]
    for name in RECOGNIZERS:
        assert np.allclose(single.main_face.embeddings[name], batched.main_face.embeddings[name], atol=1e-4)
    assert single.main_face.expression.label == batched.main_face.expression.label


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "eval.faces", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_compare_cli_says_same_person_for_two_obama_photos(faces_dir):
    result = run_cli("compare", str(faces_dir / "obama_oval.jpg"), str(faces_dir / "obama_flag.jpg"), "--json")
    assert result.returncode == 0, result.stderr
    verdicts = json.loads(result.stdout)
    for name in RECOGNIZERS:
        assert verdicts[name]["same_identity"] is True
        assert verdicts[name]["similarity"] > verdicts[name]["threshold"]


@pytest.mark.slow
def test_compare_cli_exits_zero_for_different_people_and_prints_similarities(faces_dir):
    result = run_cli("compare", str(faces_dir / "obama_oval.jpg"), str(faces_dir / "biden.jpg"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("different people") == 2
    assert "similarity" in result.stdout


@pytest.mark.slow
def test_analyze_cli_json_keys_and_error_exit(faces_dir, tmp_path):
    missing = tmp_path / "missing.jpg"
    result = run_cli("analyze", str(faces_dir / "sunak.jpg"), str(missing), "--json")
    assert result.returncode == 1
    records = json.loads(result.stdout)
    good, bad = records
    assert bad == {"image": str(missing), "error": "file not found", "faces": []}
    face = good["faces"][0]
    assert set(face) >= {"bbox", "score", "landmarks", "pose", "expression"}
    assert set(face["pose"]) == {"yaw", "pitch", "roll"}
    assert set(face["expression"]) == {"label", "scores"} and len(face["expression"]["scores"]) == 7
