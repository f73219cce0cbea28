"""The governance lines of the report and gates against a real governance workspace: a real consent
registry (SQLite), real C2PA signatures with a test PKI, a real hash-chained audit log."""
from __future__ import annotations

import pytest

from eval.report.review import prepare_review

governance = pytest.importorskip("governance")

SUBJECTS = ("subject0", "subject1", "subject2")
SYSTEM = {"id_sim": 0.6, "expr_changed": 0.5, "yaw": 10.0, "copy_paste": 0.0}


@pytest.fixture
def workspace(tmp_path, make_synthetic_run):
    """A run of three outputs (one per subject) and a workspace granting avatar-generation to two."""
    scores_dir = make_synthetic_run(tmp_path / "run", {"idadapter": SYSTEM}, n_per_system=3)
    gov = governance.GovernanceContext.init(tmp_path / "gov")
    records = {}
    for subject in SUBJECTS[:2]:
        record = gov.registry.add(governance.new_record(
            subject, [governance.Purpose.AVATAR_GENERATION, governance.Purpose.EVALUATION],
            controller=gov.config.controller, jurisdiction=gov.config.jurisdiction, actor="test"))
        records[subject] = record.record_id
    return scores_dir, gov, records, tmp_path / "gov" / "governance.toml"


def gates(scores_dir, config):
    return {gate.gate: gate for gate in prepare_review(scores_dir, governance=config, progress=False).gates()}


def test_signed_outputs_with_consent_pass_and_each_break_is_caught(workspace):
    scores_dir, gov, records, config = workspace
    run_dir = scores_dir.parent
    actor = governance.Actor("sampler", "operator")
    images = sorted((run_dir / "images").glob("*.jpg"))
    subject_of = {f"images/{path.name}": f"subject{index}" for index, path in enumerate(images)}

    for image in images[:2]:
        gov.sign_output(image, subject=subject_of[f"images/{image.name}"],
                        consent_record_id=records[subject_of[f"images/{image.name}"]],
                        generator="idadapter", model_version="0.1.0", actor=actor)
    results = gates(scores_dir, config)
    assert results["governance_audit_log"].verdict == "pass"
    provenance = results["governance_provenance"]
    assert provenance.verdict == "fail" and provenance.measured == pytest.approx(2 / 3)
    assert f"{images[2].name} (no-manifest)" in provenance.detail
    consent = results["governance_consent"]
    assert consent.verdict == "fail" and consent.measured == pytest.approx(2 / 3)
    assert "subject2" in consent.detail

    gov.registry.add(governance.new_record(
        "subject2", [governance.Purpose.AVATAR_GENERATION], controller=gov.config.controller,
        jurisdiction=gov.config.jurisdiction, actor="test"))
    gov.sign_output(images[2], subject="subject2",
                    consent_record_id=gov.registry.records_for("subject2")[0].record_id,
                    generator="idadapter", model_version="0.1.0", actor=actor)
    results = gates(scores_dir, config)
    assert {results[g].verdict for g in ("governance_provenance", "governance_consent", "governance_audit_log")} == {"pass"}

    data = bytearray(images[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the signed image
    images[0].write_bytes(bytes(data))
    results = gates(scores_dir, config)
    assert results["governance_provenance"].verdict == "fail"
    assert images[0].name in results["governance_provenance"].detail

    log = gov.config.audit_log
    lines = log.read_text().splitlines()
    signed = next(i for i, line in enumerate(lines) if "idadapter" in line)
    lines[signed] = lines[signed].replace("idadapter", "forged")
    log.write_text("\n".join(lines) + "\n")
    assert gates(scores_dir, config)["governance_audit_log"].verdict == "fail"
