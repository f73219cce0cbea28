"""The report's Human review section on the demo, with and without an export of reviews."""
from __future__ import annotations

import re

import pytest

from eval.report import build_report
from eval.report.__main__ import main as report_main
from eval.review.export import write_export


@pytest.fixture(scope="module")
def reviews_dir(tmp_path_factory, demo_frames):
    return write_export(demo_frames, tmp_path_factory.mktemp("reviews"))


def section(html: str) -> str:
    """The section's HTML with its white space collapsed."""
    return " ".join(re.search(r'<section id="human-review">(.*?)</section>', html, re.S).group(1).split())


def test_the_section_shows_every_statistic_of_the_reviews(tmp_path, demo_run, reviews_dir):
    html = build_report(out=tmp_path / "demo.html", reviews=reviews_dir, progress=False).read_text()
    part = section(html)
    assert "87 ratings, 30 A/B votes, 5 decisions by 3 reviewer(s) (alice, bob, carol)" in part
    assert re.search(r'data-question="likeness"><th>Likeness</th> <td class="num"><b>0\.7\d\d</b>', part)
    assert "RELIABLE" in part and "NOT RELIABLE" in part  # prompt fidelity: the panel disagrees more there
    assert "<b>4.67</b><br><small>[4.40, 4.87]</small>" in part  # ideal's MOS likeness
    assert "<b>10–0–0–0</b>" in part and "p 0.00195" in part  # ideal beat impostor on every vote
    assert "10 of 25 decisive votes went to the left image (40%, sign test p 0.424)." in part
    ranking = re.search(r'id="review-ranking">(.*?)</table>', part, re.S).group(1)
    assert [m for m in re.findall(r'<th class="system">([^<]+)</th>', ranking)] == ["ideal", "copy-paste", "impostor"]
    thresholds = demo_run.summary["thresholds"]
    for recognizer in demo_run.summary["recognizers"]:
        row = re.search(rf'data-recognizer="{recognizer}">(.*?)</tr>', part, re.S).group(1)
        assert f"<b>{thresholds[recognizer]:.3f}</b>" in row and "1.000" in row  # calibrated threshold, AUC
    assert part.count('<img class="plot" src="data:image/svg+xml') == 2 and "Youden" in part  # scatter and ROC
    assert "the rule calls 12 a copy, of which the humans flagged 12 (100%)" in part
    assert 'data-decision="reject"' in part and "hands look wrong" in part and part.count("APPROVE") == 4
    assert '<a href="#human-review">Human review</a>' in html
    assert 'data-gate="review_approval"' in html  # the banner judges the review gates too


def test_without_reviews_the_section_says_so(tmp_path):
    html = build_report(out=tmp_path / "demo.html", progress=False).read_text()
    part = section(html)
    assert 'data-reviews="none"' in part and "NO REVIEWS" in part and "no reviews of this run" in part
    assert "Krippendorff" not in part


def test_a_reviews_folder_that_is_no_export_is_one_clear_error(tmp_path, capsys, reviews_dir):
    (tmp_path / "ratings.parquet").write_text("not parquet")
    assert report_main([str(tmp_path / "nowhere"), "--reviews", str(reviews_dir)]) == 2
    assert report_main(["--reviews", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 2 and "nowhere: no such manifest or scores folder" in error[0]
    assert error[1].startswith(f"error: {tmp_path / 'ratings.parquet'}: not a readable parquet file")
    assert not (tmp_path / "r.html").exists()
