"""Hostile inputs to eval.score, eval.compare, eval.calibrate and eval.report: each becomes a row
error or a one-line error naming the file, never a traceback, a hang or a coerced value."""
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eval.calibrate import main as calibrate_main
from eval.compare import compare_scores, main as compare_main
from eval.faces import FaceInputError, load_image
from eval.manifest import read_manifest
from eval.outputs import new_run_id, publish_scores_set
from eval.report.__main__ import main as report_main
from eval.score import main as score_main, score_manifest

GOOD = {"system": "s", "subject": "macron", "references": ["ref.jpg"], "prompt": "a photo",
        "prompt_category": "identity", "seed": 0, "image": "ref.jpg"}


def _line(**fields) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


def test_manifest_lines_are_decoded_and_typed_one_by_one(tmp_path):
    lines = [b"\xef\xbb\xbf" + _line(seed=1), b'{"system": "\xff\xfe"}', b"[" * 200_000, _line(seed=True),
             _line(seed="42"), _line(seed=2**70), _line(seed=1.0), b'{"seed": NaN}', _line(system=7),
             _line(prompt="NA"), _line(prompt="\ud800"), b"x" * (2 << 20)]  # json.dumps writes "\\ud800"
    (tmp_path / "m.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    manifest = read_manifest(tmp_path / "m.jsonl")
    assert manifest.lines == [1, 10] and manifest.entries[0].seed == 1  # the BOM does not cost line 1
    reasons = {error.line: error.reason for error in manifest.errors}
    assert "not UTF-8" in reasons[2] and "nested too deeply" in reasons[3]
    assert all("seed" in reasons[n] for n in (4, 5, 6, 7)) and "NaN" in reasons[8] and "system" in reasons[9]
    assert "prompt" in reasons[11] and "longer than" in reasons[12]


@pytest.fixture()
def hostile_run(tmp_path, faces_dir):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(faces_dir / "macron_2014.jpg", run / "ref.jpg")
    os.mkfifo(run / "fifo.jpg")
    (run / "loop.jpg").symlink_to(run / "loop.jpg")
    Image.new("L", (65535, 1)).save(run / "strip.png")
    nan = np.full((64, 64), np.nan, dtype=np.float32)
    Image.fromarray(nan, mode="F").save(run / "nan.tif")
    try:
        os.mknod(run / "device.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero, inside the folder
        device = ["device.jpg"]
    except PermissionError:
        device = []
    images = ["fifo.jpg", "loop.jpg", "strip.png", "nan.tif", *device]
    lines = [_line(image=image, seed=seed) for seed, image in enumerate(images)]
    (run / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return run / "manifest.jsonl", images


def test_special_files_loops_strips_and_nan_images_become_row_errors(hostile_run, tmp_path):
    manifest, images = hostile_run
    out = subprocess.run([sys.executable, "-m", "eval.score", str(manifest), "--no-cache", "--quiet",
                          "--recognizers", "sface", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)  # a hang on the FIFO fails here
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet").set_index("image")
    assert list(scores.index) == images and set(scores["status"]) == {"error"}
    assert "FIFO" in scores.loc["fifo.jpg", "error"] and "resolve" in scores.loc["loop.jpg", "error"]
    assert "degenerate image size 65535x1" in scores.loc["strip.png", "error"]
    assert "NaN" in scores.loc["nan.tif", "error"]
    if "device.jpg" in images:
        assert "character device" in scores.loc["device.jpg", "error"]


def test_a_reference_outside_the_folder_fails_its_own_line_and_shifts_no_other(tmp_path, faces_dir):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(faces_dir / "macron_2014.jpg", run / "ref.jpg")
    shutil.copyfile(faces_dir / "macron_2025.jpg", run / "other.jpg")
    shutil.copyfile(faces_dir / "sunak.jpg", tmp_path / "outside.jpg")
    (run / "escape.jpg").symlink_to(tmp_path / "outside.jpg")
    lines = [_line(image="other.jpg", references=["escape.jpg"], seed=0), _line(image="other.jpg", seed=1),
             _line(image="ref.jpg", seed=2)]
    (run / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = score_manifest(run / "manifest.jsonl", tmp_path / "out", cache=False, progress=False)
    scores = result.scores.set_index("seed")
    assert scores.loc[0, "status"] == "error" and "outside the manifest's folder" in scores.loc[0, "error"]
    assert scores.loc[1, "status"] == scores.loc[2, "status"] != "error"
    assert scores.loc[2, "id_sim_sface"] > 0.99 > scores.loc[1, "id_sim_sface"]  # each line its own image


def test_the_loader_refuses_nan_floats_and_strips_in_arrays_too():
    with pytest.raises(FaceInputError, match="NaN"):
        load_image(np.full((32, 32, 3), np.nan))
    with pytest.raises(FaceInputError, match="degenerate"):
        load_image(np.zeros((1, 65535, 3), np.uint8))


@pytest.mark.parametrize("content, expected", [(b"", "the manifest has no lines"),
                                               (b"{bad\n[]\n", "no valid line to score (2 malformed")])
def test_a_manifest_with_no_valid_line_exits_non_zero_with_the_count(tmp_path, capsys, content, expected):
    (tmp_path / "m.jsonl").write_bytes(content)
    assert score_main([str(tmp_path / "m.jsonl"), "--no-cache", "--quiet", "--recognizers", "sface"]) == 2
    err = capsys.readouterr().err
    assert expected in err and not (tmp_path / "scores").exists()


@pytest.mark.parametrize("thresholds", ['{"recognizers": {"sface": {"threshold": NaN}}}', "not json",
                                        '{"recognizers": {"sface": {"threshold": "0.3"}}}'])
def test_bad_thresholds_are_refused_before_any_work(tmp_path, faces_dir, capsys, thresholds):
    (tmp_path / "t.json").write_text(thresholds)
    shutil.copyfile(faces_dir / "macron_2014.jpg", tmp_path / "ref.jpg")
    (tmp_path / "m.jsonl").write_bytes(_line() + b"\n")
    code = score_main([str(tmp_path / "m.jsonl"), "--thresholds", str(tmp_path / "t.json"), "--no-cache",
                       "--quiet", "--recognizers", "sface"])
    assert code == 2 and str(tmp_path / "t.json") in capsys.readouterr().err
    assert not (tmp_path / "scores").exists()


def test_unknown_recognizers_are_a_usage_error(tmp_path, capsys):
    (tmp_path / "m.jsonl").write_bytes(_line() + b"\n")
    with pytest.raises(SystemExit) as exit_:
        score_main([str(tmp_path / "m.jsonl"), "--recognizers", "bogus"])
    assert exit_.value.code == 2 and "unknown bogus" in capsys.readouterr().err


@pytest.fixture()
def awkward_prompts(demo_scores, tmp_path):
    """The demo's 'ideal' rows under prompts pandas' CSV reader would take for missing values or numbers."""
    rows = demo_scores.scores[demo_scores.scores["system"] == "ideal"].drop(columns="run_id").reset_index(drop=True)
    rows["prompt"] = ["NA", "null", "1", "", "nan"][: len(rows)]
    rows["subject"] = "NA"
    publish_scores_set(tmp_path, rows, {**demo_scores.summary}, new_run_id())
    return tmp_path, len(rows)


def test_compare_reads_csv_keys_exactly_and_pairs_csv_with_parquet(awkward_prompts):
    folder, n = awkward_prompts
    for a, b in [(folder / "scores.csv", folder / "scores.parquet"), (folder / "scores.csv", folder / "scores.csv")]:
        table = compare_scores(a, b).set_index("metric")
        assert table.loc["id_sim_sface", "n_pairs"] == n and table.loc["id_sim_sface", "diff"] == 0


def test_compare_names_a_file_without_the_columns_it_needs(tmp_path, capsys):
    pd.DataFrame({"subject": ["a"], "prompt": ["p"], "seed": [1], "run_id": ["x"]}).to_parquet(tmp_path / "s.parquet")
    assert compare_main([str(tmp_path / "s.parquet"), str(tmp_path / "s.parquet")]) == 2
    err = capsys.readouterr().err
    assert "s.parquet" in err and "system" in err and "Traceback" not in err


@pytest.mark.parametrize("layout", [[], ["one/a.jpg", "one/b.jpg"]])
def test_calibrate_on_too_few_identities_is_one_line(tmp_path, faces_dir, capsys, layout):
    for name in layout:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(faces_dir / "macron_2014.jpg", tmp_path / name)
    assert calibrate_main([str(tmp_path), "--cache", str(tmp_path / "c.sqlite")]) == 2
    assert "needs at least two identity sub-folders" in capsys.readouterr().err


def test_report_on_a_corrupt_parquet_or_a_bad_utf8_manifest_is_exit_2_and_one_line(demo_scores, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(demo_scores.out_dir, broken)
    (broken / "scores.parquet").write_bytes(b"PAR1" + os.urandom(300) + b"PAR1")
    assert report_main([str(broken), "--out", str(tmp_path / "r.html")]) == 2
    assert "scores.parquet" in capsys.readouterr().err
    (tmp_path / "m.jsonl").write_bytes(b"\xff\xfe\x00bad\n")
    assert report_main([str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "no valid line" in err and len(err.strip().splitlines()) <= 3


def test_csv_text_with_line_breaks_reads_back_exactly(tmp_path):
    from eval.outputs import read_scores_set

    prompts = ["a\rb", "c\nd", "e\r\nf", '"quoted", comma', "NA"]
    rows = pd.DataFrame({"line": range(1, 6), "system": "s", "subject": "x", "prompt": prompts, "status": "error"})
    publish_scores_set(tmp_path, rows, {"systems": {}}, new_run_id())
    (tmp_path / "scores.parquet").unlink()
    scores, _ = read_scores_set(tmp_path)
    assert list(scores["prompt"]) == prompts


def test_json_inputs_named_as_fifos_are_refused_not_waited_on(tmp_path):
    from eval.calibrate import load_thresholds
    from eval.report.run import RunError, _load_calibration

    os.mkfifo(tmp_path / "t.json")
    with pytest.raises(ValueError, match="FIFO"):
        load_thresholds(tmp_path / "t.json")
    with pytest.raises(RunError, match="FIFO"):
        _load_calibration(tmp_path / "t.json")


def test_manifest_check_on_a_fifo_is_one_line(tmp_path, capsys):
    from eval.manifest import main as manifest_main

    os.mkfifo(tmp_path / "m.jsonl")
    assert manifest_main(["check", str(tmp_path / "m.jsonl")]) == 2
    assert "FIFO" in capsys.readouterr().err
