"""From the review app's store to the statistics, the report and the gates: reviewers and an approver
judge the signed run through the real API, then `python -m eval.review export`, `python -m eval.report`
and the review gates read what they did (the store beside the governance workspace, by default)."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from eval.report import build_report
from eval.report.review import prepare_review
from eval.review.__main__ import main as review_main
from eval.review.app import create_app
from eval.review.auth import LoginLimiter
from eval.review.export import read_export
from eval.review.store import ReviewStore

from .conftest import PASSWORD

# what the two reviewers answer for likeness, per manifest line (1-3 system "cand", 4-5 "base")
LIKENESS = {"rita": {1: 5, 2: 5, 3: 4, 4: 2, 5: 4}, "rosa": {1: 4, 2: 5, 3: 4, 4: 1, 5: 5}}


def _token(client, name: str) -> dict:
    answer = client.post("/api/v1/token", json={"name": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def _decide(client, headers, line: int, decision: str, reason: str = "") -> None:
    token = client.get(f"/api/v1/items/{line}", headers=headers).json()["token"]
    answer = client.post("/api/v1/decisions", headers=headers,
                         json={"token": token, "line": line, "decision": decision, "reason": reason})
    assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def judged_run(signed_run, password_hash):
    """The signed run judged through the API, its store at review.sqlite beside the governance workspace."""
    workspace = signed_run.manifest.parent.parent / "gov" / "governance.toml"
    database = workspace.parent / "review.sqlite"
    database.unlink(missing_ok=True)
    store = ReviewStore(f"sqlite:///{database}")
    for name, role in {"rita": "reviewer", "rosa": "reviewer", "alan": "approver"}.items():
        store.add_account(name, role, password_hash)
    app = create_app(signed_run.catalog, store, signed_run.gov, limiter=LoginLimiter(100, 100, 60))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for reviewer, answers in LIKENESS.items():
            headers = _token(client, reviewer)
            while not (task := client.get("/api/v1/ratings/next", headers=headers).json()).get("done"):
                line = task["item"]["line"]
                answer = client.post("/api/v1/ratings", headers=headers, json={
                    "token": task["token"], "line": line, "likeness": answers[line], "prompt_fidelity": 4,
                    "quality": 4, "flags": ["copy"] if line == 2 else []})
                assert answer.status_code == 201, answer.text
            while not (task := client.get("/api/v1/pairs/next", headers=headers).json()).get("done"):
                answer = client.post("/api/v1/votes", headers=headers, json={"token": task["token"], "outcome": "tie"})
                assert answer.status_code == 201, answer.text
        alan = _token(client, "alan")
        _decide(client, alan, 1, "approve")
        _decide(client, alan, 2, "reject", "a copy of the reference photo")
    store.close()
    yield signed_run, workspace
    database.unlink()


def test_export_writes_the_stores_judgments_and_their_statistics(judged_run, tmp_path, capsys):
    signed_run, workspace = judged_run
    out = tmp_path / "reviews"
    assert review_main(["export", str(signed_run.run.scores_dir), "--workspace", str(workspace), "--out", str(out)]) == 0
    assert "10 ratings, 4 votes, 2 decisions" in capsys.readouterr().out
    frames = read_export(out)
    assert sorted(frames["ratings"]["reviewer"].unique()) == ["rita", "rosa"]
    assert frames["ratings"]["presented_position"].notna().all() and (frames["ratings"]["time_spent_s"] >= 0).all()
    summary = json.loads((out / "review_summary.json").read_text())
    mos = {(row["system"], row["question"]): row for row in summary["mos"]}
    assert mos[("cand", "likeness")]["mean"] == pytest.approx((5 + 5 + 4 + 4 + 5 + 4) / 6)
    assert mos[("base", "likeness")]["mean"] == pytest.approx((2 + 4 + 1 + 5) / 4)
    assert summary["agreement"]["likeness"]["n_images"] == 5
    assert summary["decisions"] == {"approve": 1, "reject": 1}
    assert summary["copy_paste_vs_human"]["human_copies"] == 1


def test_export_of_a_run_without_a_store_is_one_clear_error(signed_run, tmp_path, capsys):
    assert review_main(["export", str(signed_run.run.scores_dir), "--workspace", str(tmp_path / "governance.toml"),
                        "--out", str(tmp_path / "reviews")]) == 2
    assert "no governance workspace" in capsys.readouterr().err
    assert not (tmp_path / "reviews").exists()


def test_the_report_and_the_gates_read_the_store_beside_the_workspace(judged_run, tmp_path):
    signed_run, workspace = judged_run
    scores = signed_run.run.scores_dir
    review = prepare_review(scores, system="cand", governance=workspace, progress=False)
    assert review.run.human_review.available and "review store sqlite:///" in review.run.human_review.source
    gates = {gate.gate: gate for gate in review.gates()}
    approval = gates["review_approval"]
    assert approval.verdict == "fail" and approval.measured == pytest.approx(1 / 3)
    assert "tester_0001.png: rejected by alan" in approval.detail and "a copy of the reference photo" in approval.detail
    assert "tester_0002.png: not decided" in approval.detail
    html = build_report(scores, system="cand", governance=workspace, out=tmp_path / "r.html", progress=False).read_text()
    section = " ".join(html.split("<section id=\"human-review\">")[1].split("</section>")[0].split())
    assert "10 ratings, 4 A/B votes, 2 decisions by 2 reviewer(s) (rita, rosa)" in section
    assert "a copy of the reference photo" in section and section.count('data-decision="approve"') == 1
