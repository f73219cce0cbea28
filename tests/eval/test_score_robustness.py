"""Bad lines, bad images and odd images never stop a run; each gets its status and reason."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from eval.score import score_manifest

pytestmark = pytest.mark.slow


def _line(image, references=("ref.jpg",), **extra):
    return json.dumps({"system": "s", "subject": "macron", "references": list(references), "prompt": "a photo",
                       "prompt_category": "identity", "seed": extra.pop("seed", 0), "image": image, **extra})


@pytest.fixture(scope="module")
def troubled_run(tmp_path_factory, faces_dir):
    root = tmp_path_factory.mktemp("troubled")
    run = root / "run"
    run.mkdir()
    shutil.copyfile(faces_dir / "macron_2014.jpg", run / "ref.jpg")
    shutil.copyfile(faces_dir / "macron_2025.jpg", run / "good.jpg")
    left = Image.open(faces_dir / "macron_2025.jpg").convert("RGB")
    right = Image.open(faces_dir / "sunak.jpg").convert("RGB").resize((left.width // 2, left.height // 2))
    pair = Image.new("RGB", (left.width + right.width, left.height), "white")
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    pair.save(run / "two_faces.png")
    gradient = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))
    Image.fromarray(gradient).convert("RGB").save(run / "no_face.png")
    (run / "not_an_image.png").write_text("hello")
    (root / "outside.jpg").write_bytes((faces_dir / "sunak.jpg").read_bytes())
    (run / "link.jpg").symlink_to(root / "outside.jpg")
    lines = [
        _line("good.jpg", generator={"name": "idadapter", "trained_with": ["sface"]}),
        _line("two_faces.png", seed=1),
        _line("no_face.png", seed=2),
        _line("not_an_image.png", seed=3),
        _line("missing.png", seed=4),
        _line("good.jpg", references=["no_face.png"], seed=5),
        _line("link.jpg", seed=6),
        "{broken",
        _line("../outside.jpg", seed=7),
    ]
    (run / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return run / "manifest.jsonl"


@pytest.fixture(scope="module")
def troubled_scores(troubled_run, eval_analyzer, score_cache):
    return score_manifest(troubled_run, analyzer=eval_analyzer, cache=score_cache, progress=False)


def test_every_parsed_line_gets_a_row_with_its_status(troubled_scores):
    scores = troubled_scores.scores.set_index("seed")
    assert list(scores.index) == [0, 1, 2, 3, 4, 5, 6]
    assert scores.loc[0, "status"] == "ok" and scores.loc[0, "id_sim_sface"] > 0.4
    assert scores.loc[1, "status"] == "multi_face" and scores.loc[1, "n_faces"] == 2
    # the main (largest) face is scored: it is Macron, not Sunak
    assert scores.loc[1, "id_sim_sface"] == pytest.approx(scores.loc[0, "id_sim_sface"], abs=0.08)
    assert scores.loc[2, "status"] == "no_face" and "no face" in scores.loc[2, "error"]
    assert scores.loc[3, "status"] == "error" and "not an image" in scores.loc[3, "error"]
    assert scores.loc[4, "status"] == "error" and "missing.png" in scores.loc[4, "error"]
    assert scores.loc[5, "status"] == "error" and scores.loc[5, "error"].startswith("reference: no usable reference face")
    assert scores.loc[6, "status"] == "error" and "outside the manifest's folder" in scores.loc[6, "error"]


def test_malformed_lines_are_reported_with_their_numbers(troubled_scores):
    errors = {e.line: e.reason for e in troubled_scores.manifest_errors}
    assert sorted(errors) == [8, 9]
    assert "escapes" in errors[9]
    assert troubled_scores.summary["manifest_errors"][0]["line"] == 8


def test_summary_says_which_recognizers_the_generator_was_trained_with(troubled_scores):
    assert troubled_scores.summary["trained_with"] == {"s": ["sface"]}


def test_rates_count_readable_images(troubled_scores):
    metrics = troubled_scores.summary["systems"]["s"]["metrics"]
    # readable: good, two_faces, no_face -> 2 of 3 with a face, 1 of 3 with several
    assert metrics["face_detect_rate"]["mean"] == pytest.approx(2 / 3)
    assert metrics["multi_face_rate"]["mean"] == pytest.approx(1 / 3)
    assert metrics["id_sim_sface"]["n"] == 2
    assert troubled_scores.summary["status_counts"] == {"ok": 1, "multi_face": 1, "no_face": 1, "error": 4}


def test_cli_scores_a_run_and_prints_the_summary(troubled_run, tmp_path, score_cache, hide_optional_weights):
    out = subprocess.run(
        [sys.executable, "-m", "eval.score", str(troubled_run), "--out", str(tmp_path / "cli"), "--cache",
         str(score_cache), "--quiet"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TORCH_HOME": str(hide_optional_weights.folder / "torch")},
    )
    assert out.returncode == 0, out.stderr
    assert "line 8: not valid JSON" in out.stderr
    assert "s (7 images): id_sim_sface" in out.stdout
    assert "unavailable: face_div_lpips" in out.stdout
    assert (tmp_path / "cli" / "summary.json").is_file()


def test_cli_refuses_a_missing_manifest(tmp_path):
    out = subprocess.run([sys.executable, "-m", "eval.score", str(tmp_path / "nope.jsonl")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no such manifest file" in out.stderr
