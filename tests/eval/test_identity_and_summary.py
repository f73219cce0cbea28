"""Reference profiles, the copy-paste rule and the summary's denominators."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings, strategies as st

from eval.cache import open_cache
from eval.faces import similarity
from eval.score import ScoreError, score_manifest
from eval.scoring.analysis import CachedFaceAnalysis
from eval.scoring.identity import COPY_MAX_PITCH, COPY_MAX_YAW, COPY_SIMILARITY, is_copy_paste, reference_profile
from eval.scoring.summary import SHARED_METRICS, summarize_group


@pytest.fixture(scope="module")
def obama(eval_analyzer, score_cache, faces_dir):
    paths = sorted(faces_dir.glob("obama_*.jpg"))
    records = CachedFaceAnalysis(eval_analyzer, open_cache(score_cache)).analyze(paths)
    return [records[p] for p in paths]


@pytest.mark.slow  # needs the session's demo analysis
def test_several_references_combine_into_mean_embedding_pose_and_majority_expression(obama):
    profile = reference_profile(obama[:3], ["sface", "dlib"])
    unit = np.stack([r.embeddings["sface"] / np.linalg.norm(r.embeddings["sface"]) for r in obama[:3]])
    assert np.allclose(profile.embeddings["sface"], unit.mean(axis=0))
    assert np.allclose(profile.embeddings["dlib"], np.mean([r.embeddings["dlib"] for r in obama[:3]], axis=0))
    assert profile.yaw == pytest.approx(np.mean([r.yaw for r in obama[:3]]))
    labels = [r.expression for r in obama[:3]]
    assert labels.count(profile.expression) == max(labels.count(label) for label in labels)
    # the fourth photo is closer to the combined reference than to the worst single one
    held_out = obama[3].embeddings["sface"]
    combined = similarity("sface", held_out, profile.embeddings["sface"])
    assert combined >= min(similarity("sface", held_out, r.embeddings["sface"]) for r in obama[:3])


@pytest.mark.slow  # needs the session's demo analysis
def test_references_without_a_face_are_named(obama, tmp_path):
    from eval.scoring.analysis import ImageRecord

    empty = ImageRecord(path=tmp_path / "blank.png", error="no face detected", readable=True)
    assert reference_profile([empty, obama[0]], ["sface"]).embeddings["sface"] is not None
    with pytest.raises(ValueError, match="blank.png: no face detected"):
        reference_profile([empty], ["sface"])


@given(st.floats(-1, 1), st.floats(-1, 1), st.floats(-30, 30), st.floats(-30, 30), st.floats(0, 0.2))
@example(0.99, 0.99, COPY_MAX_YAW + 0.5, 0.0, 0.0)  # a copy's likeness, a turned head: not a copy
@example(0.99, 0.99, 0.0, -COPY_MAX_PITCH, 0.0)    # the tolerance itself still counts as still
@settings(max_examples=100, deadline=None)
def test_copy_paste_needs_every_recognizer_and_a_still_head(sface, dlib, d_yaw, d_pitch, raise_by):
    flagged = is_copy_paste({"sface": sface, "dlib": dlib}, d_yaw, d_pitch)
    expected = (sface >= COPY_SIMILARITY["sface"] and dlib >= COPY_SIMILARITY["dlib"]
                and abs(d_yaw) <= COPY_MAX_YAW and abs(d_pitch) <= COPY_MAX_PITCH)
    assert flagged == expected
    if flagged:  # more similar never un-flags
        assert is_copy_paste({"sface": min(1, sface + raise_by), "dlib": min(1, dlib + raise_by)}, d_yaw, d_pitch)
    assert not is_copy_paste({"sface": sface, "dlib": dlib}, None, d_pitch)
    assert not is_copy_paste({"other": 1.0}, 0, 0)


statuses = st.sampled_from(["ok", "multi_face", "no_face", "error"])


@given(st.lists(st.tuples(statuses, st.floats(-1, 1), st.booleans(), st.floats(-40, 40)), min_size=1, max_size=25))
@settings(max_examples=60, deadline=None)
def test_summary_denominators(rows):
    table = pd.DataFrame([
        {"status": s, "id_sim_sface": v if s in ("ok", "multi_face") else np.nan,
         "expr_changed": c if s in ("ok", "multi_face") else pd.NA, "d_yaw": y, "d_pitch": -y,
         "copy_paste": c and s in ("ok", "multi_face"), "clip_t": np.nan, "clip_i": np.nan}
        for s, v, c, y in rows
    ]).astype({"expr_changed": "boolean", "copy_paste": "boolean"})
    summary = summarize_group(table, [], ["sface"], {"clip_t": "no CLIP", "clip_i": "no CLIP"})
    metrics, reasons = summary["metrics"], summary["unavailable"]
    assert list(metrics) == ["id_sim_sface", *SHARED_METRICS]
    readable = [r for r in rows if r[0] != "error"]
    faces = [r for r in rows if r[0] in ("ok", "multi_face")]
    if readable:
        assert metrics["face_detect_rate"]["n"] == len(readable)
        assert metrics["face_detect_rate"]["mean"] == pytest.approx(len(faces) / len(readable), abs=1e-6)
        assert metrics["multi_face_rate"]["mean"] == pytest.approx(
            sum(r[0] == "multi_face" for r in rows) / len(readable), abs=1e-6)
    else:
        assert reasons["face_detect_rate"] == "no readable image"
    if faces:
        assert metrics["id_sim_sface"]["n"] == metrics["copy_paste_rate"]["n"] == len(faces)
        assert metrics["pose_div_yaw"]["mean"] == pytest.approx(np.mean([abs(r[3]) for r in faces]), abs=1e-6)
        assert 0 <= metrics["expr_div"]["mean"] <= 1
    else:
        assert reasons["id_sim_sface"] == "no image with a detected face"
    assert reasons["clip_t"] == "no CLIP" and metrics["clip_t"] is None
    assert reasons["face_div_lpips"].startswith("no subject x prompt set")


@pytest.mark.slow  # needs the session's demo analysis
@pytest.mark.parametrize("text, reason", [("{}\nnot json\n", "no valid line to score \\(2 malformed"),
                                          ("\n  \n", "the manifest has no lines")])
def test_a_manifest_with_no_valid_line_is_refused_and_writes_nothing(tmp_path, eval_analyzer, score_cache, text,
                                                                      reason):
    manifest = tmp_path / "run.jsonl"
    manifest.write_text(text)
    with pytest.raises(ScoreError, match=reason):
        score_manifest(manifest, analyzer=eval_analyzer, cache=score_cache, progress=False)
    assert not (tmp_path / "scores").exists()


def test_arcface_joins_the_judges_only_when_the_user_supplies_it(tmp_path, monkeypatch):
    from eval.scoring.analysis import default_recognizers

    monkeypatch.setenv("IDAVATAR_ARCFACE", str(tmp_path / "w600k_r50.onnx"))
    assert default_recognizers() == ["sface", "dlib"]
    (tmp_path / "w600k_r50.onnx").write_bytes(b"user-supplied weights")
    assert default_recognizers() == ["sface", "dlib", "arcface"]
