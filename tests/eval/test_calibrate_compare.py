"""Calibration on the bundled photos, and the paired comparison of systems."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings, strategies as st

from eval.calibrate import calibrate_folder, load_thresholds, operating_point
from eval.compare import compare_scores
from eval.demo.build import build_identity_folders
from eval.score import score_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, eval_analyzer, score_cache):
    folder = build_identity_folders(tmp_path_factory.mktemp("identities"))
    return calibrate_folder(folder, folder / "out" / "calibration.json", analyzer=eval_analyzer,
                            cache=score_cache, progress=False)


def test_identity_layout_follows_the_file_names(tmp_path):
    folder = build_identity_folders(tmp_path)
    layout = {p.name: sorted(f.name for f in p.iterdir()) for p in folder.iterdir()}
    assert layout["obama"] == ["obama_flag.jpg", "obama_oval.jpg", "obama_podium.jpg", "obama_senate.jpg"]
    assert len(layout) == 5 and sum(map(len, layout.values())) == 10


def test_calibration_on_the_bundled_photos(calibration):
    assert calibration["n_genuine_pairs"] == 8 and calibration["n_impostor_pairs"] == 37
    for name in ("sface", "dlib"):
        entry = calibration["recognizers"][name]
        assert entry["far"] <= calibration["target_far"]
        assert entry["frr"] == 0 and entry["auc"] == 1.0  # these recognizers separate the 10 photos
        assert 0 < entry["threshold"] < 1 and name in entry["models"]
        assert entry["roc"]["fpr"][-1] == 1.0
    written = json.loads(open(calibration["folder"] + "/out/calibration.json").read())
    assert written["recognizers"]["sface"]["threshold"] == calibration["recognizers"]["sface"]["threshold"]
    png = calibration["roc_plot"]
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_scoring_uses_calibrated_thresholds(calibration, demo_manifest, eval_analyzer, score_cache, tmp_path):
    path = calibration["folder"] + "/out/calibration.json"
    assert load_thresholds(path) == {n: e["threshold"] for n, e in calibration["recognizers"].items()}
    result = score_manifest(demo_manifest, tmp_path, analyzer=eval_analyzer, thresholds=path, cache=score_cache,
                            progress=False)
    assert result.summary["thresholds"] == load_thresholds(path)
    assert result.summary["threshold_source"] == path


def test_load_thresholds_names_a_bad_file(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"recognizers": {"sface": {}}}')
    with pytest.raises(ValueError, match="c.json: not a calibration file"):
        load_thresholds(bad)


@given(st.lists(st.floats(-1, 1), min_size=1, max_size=20), st.lists(st.floats(-1, 1), min_size=1, max_size=40),
       st.sampled_from([0.0, 0.01, 0.1, 0.3]))
@example(genuine=[-0.9999999999999999], impostor=[-1.0], target=0.0)  # no float between the two scores
@settings(max_examples=80, deadline=None)
def test_operating_point_never_exceeds_the_target_far(genuine, impostor, target):
    point = operating_point(np.array(genuine), np.array(impostor), target)
    impostor, genuine = np.array(impostor), np.array(genuine)
    assert point["far"] <= target
    assert point["far"] == np.mean(impostor >= point["threshold"])
    assert point["frr"] == np.mean(genuine < point["threshold"])


def test_calibrate_cli(tmp_path, score_cache):
    folder = build_identity_folders(tmp_path / "ids")
    out = subprocess.run([sys.executable, "-m", "eval.calibrate", str(folder), "--target-far", "0.05", "--cache",
                          str(score_cache)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "8 genuine / 37 impostor pairs" in out.stdout and "sface: threshold" in out.stdout
    assert (folder / "calibration.json").is_file() and (folder / "calibration.png").is_file()


def test_paired_comparison_of_demo_systems(demo_scores):
    table = compare_scores(demo_scores.scores, demo_scores.scores, "copy-paste", "impostor").set_index("metric")
    assert table.loc["id_sim_sface", "n_pairs"] == 12
    assert table.loc["id_sim_sface", "diff"] < -0.5 and table.loc["id_sim_sface", "ci_high"] < 0
    assert table.loc["id_sim_sface", "p_value"] < 0.01
    assert table.loc["copy_paste_rate", "diff"] < 0
    same = compare_scores(demo_scores.scores_path, demo_scores.out_dir, "ideal", "ideal").set_index("metric")
    assert (same["diff"].dropna() == 0).all() and (same["p_value"].dropna() == 1).all()
    assert same.loc["clip_t", "n_pairs"] == 0 and pd.isna(same.loc["clip_t", "diff"])


def test_compare_refuses_ambiguous_or_unpaired_input(demo_scores):
    with pytest.raises(ValueError, match="several systems"):
        compare_scores(demo_scores.scores, demo_scores.scores)
    other = demo_scores.scores.assign(subject="someone else")
    with pytest.raises(ValueError, match="nothing to pair"):
        compare_scores(demo_scores.scores, other, "ideal", "ideal")


def test_compare_cli(demo_scores, tmp_path):
    out = subprocess.run([sys.executable, "-m", "eval.compare", str(demo_scores.scores_path),
                          str(demo_scores.csv_path), "--system-a", "ideal", "--system-b", "impostor",
                          "--out", str(tmp_path / "cmp.csv")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "id_sim_sface" in out.stdout
    table = pd.read_csv(tmp_path / "cmp.csv").set_index("metric")
    assert table.loc["id_sim_dlib", "n_pairs"] == 5 and table.loc["id_sim_dlib", "diff"] < 0
    bad = subprocess.run([sys.executable, "-m", "eval.compare", str(demo_scores.scores_path),
                          str(demo_scores.scores_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--system-a" in bad.stderr
