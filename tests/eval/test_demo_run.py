"""The issue's acceptance: the demo run scores as expected (ideal / copy-paste / impostor)."""
import json

import pandas as pd
import pytest

from eval.demo.build import AUGMENTATIONS, build_demo_run, photos_by_person
from eval.manifest import read_manifest
from eval.scoring.summary import SHARED_METRICS

pytestmark = pytest.mark.slow
RECOGNIZERS = ["sface", "dlib"]


def test_demo_manifest_is_complete_and_stays_inside_its_folder(demo_manifest, faces_dir):
    manifest = read_manifest(demo_manifest)
    assert manifest.errors == []
    by_system = pd.Series([e.system for e in manifest.entries]).value_counts().to_dict()
    subjects = [p for p, photos in photos_by_person(faces_dir).items() if len(photos) > 1]
    assert sorted(subjects) == ["ardern", "macron", "obama"]
    assert by_system == {"copy-paste": len(subjects) * len(AUGMENTATIONS), "impostor": 12, "ideal": 5}
    for entry in manifest.entries:
        assert (demo_manifest.parent / entry.image).is_file()
        assert all((demo_manifest.parent / ref).is_file() for ref in entry.references)


def test_demo_build_is_deterministic(tmp_path, demo_manifest):
    again = build_demo_run(tmp_path / "again")
    assert again.read_bytes() == demo_manifest.read_bytes()
    for copy in sorted((demo_manifest.parent / "copy-paste").iterdir()):
        assert (tmp_path / "again" / "copy-paste" / copy.name).read_bytes() == copy.read_bytes()


def test_summary_orders_copy_paste_over_ideal_over_impostor_with_separated_intervals(demo_scores):
    systems = demo_scores.summary["systems"]
    for name in RECOGNIZERS:
        copy, ideal, impostor = (systems[s]["metrics"][f"id_sim_{name}"] for s in ("copy-paste", "ideal", "impostor"))
        assert copy["ci_low"] > ideal["ci_high"], name
        assert ideal["ci_low"] > impostor["ci_high"], name
        # a real second photo of the person is a match on the recognizer's own threshold; a stranger is not
        threshold = demo_scores.summary["thresholds"][name]
        assert ideal["ci_low"] > threshold > impostor["ci_high"], name


def test_ideal_has_diversity_copies_have_almost_none_and_are_flagged(demo_scores):
    metrics = {s: v["metrics"] for s, v in demo_scores.summary["systems"].items()}
    ideal, copy, impostor = metrics["ideal"], metrics["copy-paste"], metrics["impostor"]
    assert ideal["pose_div_yaw"]["mean"] > 3 and ideal["pose_div_pitch"]["mean"] > 3
    assert ideal["expr_div"]["mean"] > 0
    assert copy["pose_div_yaw"]["mean"] < 3 and copy["pose_div_pitch"]["mean"] < 3
    assert copy["expr_div"]["mean"] <= 0.1
    assert ideal["pose_div_yaw"]["mean"] > copy["pose_div_yaw"]["mean"]
    assert copy["copy_paste_rate"]["mean"] >= 0.9
    assert ideal["copy_paste_rate"]["mean"] == 0 and impostor["copy_paste_rate"]["mean"] == 0
    flagged = demo_scores.scores.loc[demo_scores.scores["copy_paste"].fillna(False).astype(bool), "system"]
    assert set(flagged) == {"copy-paste"}


def test_lpips_and_clip_are_unavailable_with_the_reason_without_weights(demo_scores, hide_optional_weights):
    for system in demo_scores.summary["systems"].values():
        for scope in [system, *system["by_category"].values()]:
            assert scope["metrics"]["face_div_lpips"] is None
            assert scope["metrics"]["clip_t"] is None and scope["metrics"]["clip_i"] is None
            reason = scope["unavailable"]["face_div_lpips"]
            assert str(hide_optional_weights.folder / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in reason
            assert "openai/clip-vit-large-patch14" in scope["unavailable"]["clip_t"]
    assert demo_scores.scores["clip_t"].isna().all()


def test_outputs_follow_the_contract(demo_scores):
    out = demo_scores.out_dir
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(demo_scores.summary))
    assert summary["recognizers"] == RECOGNIZERS
    assert {m["id"] for m in summary["models"]} >= {"yunet", "sface", "dlib", "fer"}
    expected_keys = [f"id_sim_{r}" for r in RECOGNIZERS] + SHARED_METRICS
    for system in summary["systems"].values():
        assert list(system["metrics"]) == expected_keys
        assert set(system["by_category"]) == {"identity"}
        assert "sface~dlib" in system["recognizer_agreement"]
        for key, value in system["metrics"].items():
            assert (value is None) == (key in system["unavailable"])
            if value is not None:
                assert value["ci_low"] <= value["mean"] <= value["ci_high"] and value["n"] > 0
    parquet = pd.read_parquet(out / "scores.parquet")
    csv = pd.read_csv(out / "scores.csv")
    assert len(parquet) == len(csv) == 29
    for column in ["system", "subject", "prompt", "prompt_category", "seed", "image", "references", "status",
                   "error", "n_faces", "id_sim_sface", "id_sim_dlib", "expr_label", "ref_expr_label",
                   "expr_changed", "yaw", "pitch", "roll", "d_yaw", "d_pitch", "copy_paste", "clip_t", "clip_i",
                   "face_crop"]:
        assert column in parquet.columns, column
    assert set(parquet["status"]) == {"ok"}
    for crop in parquet["face_crop"]:
        assert (out / crop).is_file()
    assert parquet["id_sim_sface"].round(6).tolist() == csv["id_sim_sface"].round(6).tolist()


def test_recognizers_agree_on_the_ranking(demo_scores):
    agreement = demo_scores.summary["systems"]["impostor"]["recognizer_agreement"]["sface~dlib"]
    assert agreement["n"] == 12
    overall = demo_scores.summary["recognizer_agreement"]["sface~dlib"]
    expected = demo_scores.scores[["id_sim_sface", "id_sim_dlib"]].corr(method="spearman").iloc[0, 1]
    assert overall["spearman"] == pytest.approx(expected) and overall["spearman"] > 0.8 and overall["n"] == 29
