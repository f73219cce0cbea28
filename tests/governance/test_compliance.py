import json
import shutil

import pytest
from PIL import Image

from governance import Actor, ConsentRefused, GovernanceContext, Purpose, new_record
from governance.__main__ import main
from governance.demo import create_demo_governance

SAMPLER = Actor("idadapter-sampler", "operator")


def generate(gov, png, out, subject, name):
    """What the sampler does per output: gate, write, sign, log."""
    record_id = gov.authorize(subject, Purpose.AVATAR_GENERATION, actor=SAMPLER)
    return gov.sign_output(png, dest=out / name, subject=subject, consent_record_id=record_id,
                           generator="idadapter", model_version="0.1.0", actor=SAMPLER)


@pytest.fixture
def out(gov, consented, png, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    for i in range(3):
        generate(gov, png, folder, "alice", f"alice_{i:04d}.png")
    gov.audit_log.checkpoint()  # as the sampler and the CLI do when they finish
    return folder


def test_compliant_folder_passes(gov, out, capsys):
    report = gov.audit_dir(out)
    assert report.ok and len(report.rows) == 3
    assert all(row.provenance == "trusted" and row.consent == "allowed" and row.audit_entry for row in report.rows)
    config = str(gov.config.audit_log.parents[1] / "governance.toml")
    report_path = out.parent / "report.json"
    assert main(["--config", config, "--role", "auditor", "audit-dir", str(out), "--json", str(report_path)]) == 0
    assert "PASS: 3 files, 0 failed" in capsys.readouterr().out
    assert json.loads(report_path.read_text())["ok"] is True


def test_each_failure_is_reported(gov, out, png, tmp_path, capsys):
    Image.open(out / "alice_0000.png").save(out / "alice_0000.png")       # re-saved: manifest dropped
    shutil.copy(png, out / "unsigned.png")                                # never signed
    other = GovernanceContext.init(tmp_path / "elsewhere")                # signed under another root
    other.registry.add(new_record("alice", [Purpose.AVATAR_GENERATION], controller="C", jurisdiction="EU", actor="x"))
    generate(other, png, out, "alice", "foreign.png")
    signed_without_log = gov.signer.sign(png, out / "unlogged.png", generator="idadapter", model_version="0.1.0",
                                         consent_record_id=gov.registry.records_for("alice")[0].record_id)
    report = gov.audit_dir(out)
    problems = {row.image: " ".join(row.problems) for row in report.rows}
    assert not report.ok
    assert "no-manifest" in problems["alice_0000.png"] and "no-manifest" in problems["unsigned.png"]
    assert "untrusted" in problems["foreign.png"]
    assert "no provenance.sign entry" in problems[signed_without_log.name]
    assert problems["alice_0001.png"] == ""
    config = str(gov.config.audit_log.parents[1] / "governance.toml")
    assert main(["--config", config, "--role", "auditor", "audit-dir", str(out), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["failed"] == 4


def test_consent_must_allow_generation_at_signing_time(gov, png, tmp_path):
    record = gov.registry.add(new_record("carol", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="x"))
    folder = tmp_path / "carol"
    folder.mkdir()
    gov.signer.sign(png, folder / "carol.png", generator="idadapter", model_version="0.1.0",
                    consent_record_id=record.record_id)
    row = gov.audit_dir(folder).rows[0]
    assert row.consent == "refused: purpose not granted" and not row.ok
    gov.signer.sign(png, folder / "ghost.png", generator="idadapter", model_version="0.1.0",
                    consent_record_id="urn:uuid:not-in-the-registry")
    assert "no consent record" in " ".join(gov.audit_dir(folder).rows[1].problems)


def test_withdrawal_after_signing_keeps_past_outputs_compliant(gov, out, operator):
    """The audit asks whether consent allowed generation *when* the image was signed."""
    gov.vault.withdraw("alice", actor=operator)
    assert gov.audit_dir(out).ok
    with pytest.raises(ConsentRefused, match="withdrawn"):
        gov.authorize("alice", Purpose.AVATAR_GENERATION, actor=SAMPLER)


def test_signing_needs_a_matching_record_in_force(gov, consented, png):
    gov.registry.add(new_record("bob", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="x"))
    with pytest.raises(ConsentRefused, match="belongs to 'alice'"):
        gov.sign_output(png, subject="bob", consent_record_id=consented.record_id, generator="g",
                        model_version="1", actor=SAMPLER)
    with pytest.raises(PermissionError, match="lacks permission 'sign'"):
        gov.sign_output(png, subject="alice", consent_record_id=consented.record_id, generator="g",
                        model_version="1", actor=Actor("aude", "auditor"))
    assert gov.audit_log.entries()[-1]["outcome"] == "refused"


def test_demo_governance_refuses_avatar_generation(tmp_path):
    subjects = ["macron", "ardern", "obama", "sunak", "biden"]
    gov = create_demo_governance(tmp_path / "demo", subjects)
    for subject in subjects:
        status = gov.consent_status(subject)
        assert status["evaluation"].allowed and status["calibration"].allowed
        assert status["avatar-generation"].reason == "purpose not granted"
        assert status["training"].reason == "purpose not granted"
    with pytest.raises(ConsentRefused, match="obama / avatar-generation .*refused: purpose not granted"):
        gov.authorize("obama", Purpose.AVATAR_GENERATION, actor=SAMPLER)
    assert main(["demo-init", str(tmp_path / "demo"), "sunak", "lula"]) == 0  # idempotent, extendable
    again = GovernanceContext.load(tmp_path / "demo" / "governance.toml")
    assert again.consent_status("lula")["evaluation"].allowed
    assert len(again.registry.records_for("sunak")) == 1
    assert again.verify_audit_log().ok


def test_config_paths_are_relative_to_the_toml(gov, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    shutil.copytree(gov.config.audit_log.parents[1], moved)
    monkeypatch.setenv("GOVERNANCE_CONFIG", str(moved / "governance.toml"))
    loaded = GovernanceContext.load()
    assert loaded.config.registry == moved / "consent.sqlite"
    with pytest.raises(FileNotFoundError, match="governance config"):
        GovernanceContext.load(tmp_path / "missing.toml")
