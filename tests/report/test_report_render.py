"""The HTML report on a run whose values the test chose: sections, escaping, self-containment, size."""
from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval.report import build_report
from eval.report.__main__ import main
from eval.report.render import render_report, write_report
from eval.report.review import prepare_review
from eval.report.run import RunError, load_run

SECTIONS = ("gates", "headline", "scatter", "categories", "grids", "calibration", "comparison", "models",
            "governance", "methods")


class Resources(HTMLParser):
    """Every URL the page would load, and every element id."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.ids: set[str] = set()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "poster", "data") and value is not None:
                self.urls.append(value)
            if name == "id":
                self.ids.add(value)


def parse(html: str) -> Resources:
    parser = Resources()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def html(synthetic_run, gate_spec):
    return render_report(synthetic_run, gate_spec)


def test_every_section_is_present(html):
    assert set(SECTIONS) <= parse(html).ids


def test_nothing_is_loaded_from_outside_the_file(html):
    resources = parse(html)
    assert resources.urls, "the report embeds its images"
    outside = [url for url in resources.urls if not (url.startswith("data:") or url.startswith("#"))]
    assert outside == []
    assert "script" not in resources.tags and "link" not in resources.tags
    assert "url(" not in html.split("</style>")[0].split("<style>")[1]  # no CSS fetch either


def test_the_verdict_banner_shows_each_gate_with_value_threshold_and_ci(html, synthetic_run):
    row = re.search(r'<tr class="(\w+)" data-gate="id_sim_sface">(.*?)</tr>', html, re.S)
    assert row is not None
    mean = synthetic_run.summary["systems"]["candidate"]["metrics"]["id_sim_sface"]
    assert row.group(1) == "pass"
    assert f"{mean['mean']:.3f}" in row.group(2) and f"{mean['ci_low']:.3f}" in row.group(2)
    assert "0.360" in row.group(2)  # the synthetic run's calibrated threshold
    assert re.search(r'data-gate="clip_t">.*?UNAVAILABLE', html, re.S)


def test_governance_without_configuration_is_shown_as_not_configured_never_passing(html):
    governance = html.split('id="governance"')[1].split("</section>")[0]
    assert "NOT CONFIGURED" in governance and "ALLOWED" not in governance and "VERIFIES" not in governance
    for gate in ("governance_provenance", "governance_consent", "governance_audit_log"):
        assert re.search(rf'<tr class="unavailable" data-gate="{gate}">', html)


def test_failures_are_shown_with_their_reason(html):
    grids = html.split('id="grids"')[1].split("</section>")[0]
    assert "no face: no face detected" in grids
    assert "unreadable: cannot read image: not an image" in grids
    assert "several faces" in grids


def test_non_commercial_weights_are_flagged(html):
    models = html.split('id="models"')[1].split("</section>")[0]
    arcface_row = re.search(r"<tr class=\"noncommercial\"><th>arcface</th>.*?</tr>", models, re.S)
    assert arcface_row is not None and "NON-COMMERCIAL" in arcface_row.group(0)
    assert "<th>sface</th>" in models and 'class="noncommercial"><th>sface' not in models


def test_user_text_is_escaped(synthetic_run, gate_spec):
    hostile = "<img src=x onerror=alert(1)>"
    run = copy.copy(synthetic_run)
    run.scores = synthetic_run.scores.copy()
    run.scores.loc[run.scores.index[0], "prompt"] = hostile
    run.scores.loc[run.scores["subject"] == "subject1", "subject"] = hostile
    html = render_report(run, gate_spec)
    assert hostile not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html  # the synthetic style prompt carries markup too
    assert all(url.startswith(("data:", "#")) for url in parse(html).urls)


def test_per_category_tables_cover_each_prompt_category(html):
    categories = html.split('id="categories"')[1].split("</section>")[0]
    for category in ("identity", "expression", "style"):
        assert f"<th>{category}</th>" in categories


def test_each_reference_appears_beside_its_outputs_with_crops(html, synthetic_run):
    grids = html.split('id="grids"')[1].split("</section>")[0]
    scored = synthetic_run.scores["face_crop"].notna().sum()
    assert grids.count('class="crop"') == scored
    assert grids.count('alt="reference reference.jpg"') == synthetic_run.scores.groupby(["system", "subject"]).ngroups


@pytest.mark.slow
def test_the_report_of_a_few_hundred_images_stays_small_enough_to_mail(tmp_path, make_synthetic_run, gate_spec):
    big = {"id_sim": 0.6, "expr_changed": 0.5, "yaw": 10.0, "copy_paste": 0.0}
    scores_dir = make_synthetic_run(tmp_path, {"a": big, "b": big}, n_per_system=100)
    run = load_run(scores_dir, system="a", progress=False)
    out = write_report(render_report(run, gate_spec), tmp_path / "big.html")
    size = out.stat().st_size
    assert len(run.scores) == 200
    assert size < 10 * 2**20, f"{size / 2**20:.1f} MiB for 200 images"
    originals = sum((run.manifest_dir / image).stat().st_size for image in run.scores["image"])
    assert size < originals / 3  # thumbnails, not originals


def test_write_report_replaces_the_file_whole(tmp_path):
    out = tmp_path / "reports" / "r.html"
    write_report("<p>old</p>", out)
    write_report("<p>new</p>", out)
    assert out.read_text() == "<p>new</p>"
    assert [p.name for p in out.parent.iterdir()] == ["r.html"]


def test_build_report_names_the_file_after_the_run(tmp_path, synthetic_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = build_report(synthetic_dir, system="candidate", progress=False)
    assert path == tmp_path / "reports" / f"{synthetic_dir.parent.name}.html"
    assert 'data-overall="' in path.read_text()


def test_the_cli_refuses_a_missing_run_naming_it(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html")]) == 2
    assert "nowhere: no such manifest or scores folder" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_a_run_with_several_systems_needs_the_candidate_named(synthetic_dir):
    with pytest.raises(RunError, match="choose the candidate with --system"):
        load_run(synthetic_dir, progress=False)
    with pytest.raises(RunError, match="no system 'nope'"):
        load_run(synthetic_dir, system="nope", progress=False)


def test_a_folder_without_a_summary_is_refused(tmp_path):
    with pytest.raises(RunError, match="not a scores folder"):
        load_run(tmp_path, progress=False)


def test_a_run_folder_stands_for_its_scores(synthetic_dir):
    run = load_run(synthetic_dir.parent, system="candidate", progress=False)
    assert run.scores_dir == synthetic_dir and run.name == synthetic_dir.parent.name


def test_the_scores_csv_is_read_when_there_is_no_parquet(tmp_path, make_synthetic_run):
    scores_dir = make_synthetic_run(tmp_path, {"only": {"id_sim": 0.5, "expr_changed": 0.5, "yaw": 5.0,
                                                        "copy_paste": 0.0}}, n_per_system=4)
    pd.read_parquet(scores_dir / "scores.parquet").to_csv(scores_dir / "scores.csv", index=False)
    (scores_dir / "scores.parquet").unlink()
    run = load_run(scores_dir, progress=False)
    assert run.candidate == "only" and len(run.scores) == 4


def test_a_baseline_comparison_shows_paired_deltas_with_ci_and_significance(tmp_path, synthetic_dir):
    out = build_report(synthetic_dir, out=tmp_path / "r.html", system="candidate", baseline=synthetic_dir,
                       baseline_system="baseline", progress=False)
    comparison = out.read_text().split('id="comparison"')[1].split("</section>")[0]
    row = re.search(r'<tr class="sig-better"><th>ID-Sim \(sface\)</th>(.*?)</tr>', comparison, re.S)
    assert row is not None, comparison  # 0.62 vs 0.45 on 9 paired images: a clear gain
    assert row.group(1).count("[") == 1 and "better" in row.group(1)


def test_a_significant_drop_fails_the_regression_gate(synthetic_dir):
    review = prepare_review(synthetic_dir, system="baseline", baseline=synthetic_dir, baseline_system="candidate",
                            progress=False)
    gates = {gate.gate: gate for gate in review.gates()}
    drop = gates["regression_id_sim_sface"]
    assert drop.verdict == "fail"
    assert drop.measured < -0.1 and drop.ci[1] < 0 and drop.threshold == 0.02
    assert f"candidate - baseline ({synthetic_dir.parent.name}:candidate)" in drop.message
    assert gates["regression_copy_paste_rate"].verdict == "pass"


def test_runs_that_share_no_image_key_cannot_be_compared(tmp_path, synthetic_dir, make_synthetic_run):
    other = make_synthetic_run(tmp_path, {"x": {"id_sim": 0.5, "expr_changed": 0.5, "yaw": 5.0, "copy_paste": 0.0}},
                               n_per_system=3, prompts=[("an unrelated prompt", "scene")])
    with pytest.raises(RunError, match="cannot compare"):
        prepare_review(synthetic_dir, system="candidate", baseline=other, progress=False)


@pytest.mark.slow
def test_a_manifest_is_scored_by_the_harness_then_reported(tmp_path, faces_dir):
    (tmp_path / "photos").mkdir()
    for name in ("obama_senate.jpg", "obama_oval.jpg", "biden.jpg"):
        (tmp_path / "photos" / name).write_bytes((faces_dir / name).read_bytes())
    lines = [{"system": "sys-a", "subject": "obama", "references": ["photos/obama_senate.jpg"],
              "prompt": prompt, "prompt_category": "identity", "seed": seed, "image": image}
             for seed, (prompt, image) in enumerate([("a photo of a man", "photos/obama_oval.jpg"),
                                                     ("a photo of a man", "photos/biden.jpg")])]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    out = build_report(manifest, out=tmp_path / "a.html", progress=False)
    html = out.read_text()
    assert (tmp_path / "scores" / "summary.json").is_file()
    assert "Avatar review — " + tmp_path.name in html  # a run named after its folder
    assert html.count('class="crop"') == 2 and "obama_oval.jpg" in html and "biden.jpg" in html
    assert re.search(r'id="manifest-errors">1 manifest line\(s\) skipped:\s*line 3:', html)


class Markup(HTMLParser):
    """The tags and attribute names of a page: what user text must never add to."""

    def __init__(self):
        super().__init__()
        self.shape: set[tuple[str, str]] = set()

    def handle_starttag(self, tag, attrs):
        self.shape.add((tag, ""))
        self.shape.update((tag, name) for name, _ in attrs)


def markup(html: str) -> set[tuple[str, str]]:
    parser = Markup()
    parser.feed(html)
    return parser.shape


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, make_synthetic_run):
    scores_dir = make_synthetic_run(tmp_path_factory.mktemp("tiny"), {
        "s": {"id_sim": 0.5, "expr_changed": 0.5, "yaw": 5.0, "copy_paste": 0.0, "failures": ["error"]}},
        n_per_system=2)
    return load_run(scores_dir, progress=False)


user_text = st.lists(st.sampled_from(list("<>\"'&=/ ab") + ["<script>", "<img src=x onerror=", "</td>"]),
                     min_size=1, max_size=12).map("".join)


@pytest.fixture(scope="module")
def plain_markup(tiny_run, gate_spec):
    return markup(render_report(tiny_run, gate_spec))


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=user_text, subject=user_text, category=user_text)
def test_user_text_never_adds_markup(tiny_run, gate_spec, plain_markup, prompt, subject, category):
    run = copy.copy(tiny_run)
    run.scores = tiny_run.scores.assign(prompt=prompt, subject=subject, prompt_category=category)
    assert markup(render_report(run, gate_spec)) <= plain_markup
