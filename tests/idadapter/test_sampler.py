"""The sampler CLI end to end: consent gate, C2PA signing, audit log, and a manifest eval reads."""
import hashlib
import subprocess
import sys

import pytest
from PIL import Image

from eval.faces import default_threshold
from eval.manifest import read_manifest
from governance import Actor, GovernanceContext, Purpose, new_record
from governance.demo import create_demo_governance
from idadapter.sample import EXIT_REFUSED, main
from idadapter.testing import random_adapter
from idadapter.weights import save_adapter


@pytest.fixture
def workspace(tmp_path, pipe):
    gov = create_demo_governance(tmp_path / "gov", ["macron"])
    gov.record_consent(new_record("tester", [Purpose.AVATAR_GENERATION, Purpose.EVALUATION],
                                  controller="test studio", jurisdiction="EU", actor="registrar"),
                       actor=Actor("registrar", "operator"))
    save_adapter(tmp_path / "adapter", random_adapter(pipe, gate=0.5), pipe.unet)
    return tmp_path


def sample_args(workspace, tiny_base, subject, photo, *extra):
    return ["--base", str(tiny_base), "--adapter", str(workspace / "adapter"), "--photo", str(photo),
            "--subject", subject, "--prompt", "a photo of a woman smiling", "--class-noun", "woman",
            "--category", "expression", "-n", "2", "--steps", "2", "--out", str(workspace / "out"),
            "--governance", str(workspace / "gov" / "governance.toml"), *extra]


def test_a_subject_with_evaluation_only_consent_is_refused_before_the_photo_is_read(workspace, tiny_base, capsys):
    missing_photo = workspace / "never-read.jpg"  # does not exist: a refusal must come before any read
    assert main(sample_args(workspace, tiny_base, "macron", missing_photo)) == EXIT_REFUSED
    error = capsys.readouterr().err
    assert "no avatar-generation consent for subject 'macron'" in error and "purpose not granted" in error
    assert not (workspace / "out").exists()
    gov = GovernanceContext.load(workspace / "gov" / "governance.toml")
    last = gov.audit_log.entries()[-1]
    assert (last["action"], last["subject"], last["outcome"]) == ("consent.check", "macron", "refused")
    assert gov.verify_audit_log().ok


def test_an_unknown_subject_is_refused(workspace, tiny_base, faces_dir, capsys):
    assert main(sample_args(workspace, tiny_base, "nobody", faces_dir / "biden.jpg")) == EXIT_REFUSED
    assert "'nobody'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_consenting_subject_gets_signed_logged_images_and_a_manifest_the_report_renders(workspace, tiny_base, faces_dir):
    assert main(sample_args(workspace, tiny_base, "tester", faces_dir / "ardern_2018.jpg", "--seed", "5")) == 0
    out = workspace / "out"
    manifest = read_manifest(out / "manifest.jsonl")
    assert not manifest.errors and len(manifest.entries) == 2
    assert [e.seed for e in manifest.entries] == [5, 6]
    entry = manifest.entries[0]
    assert (entry.system, entry.subject, entry.prompt_category) == ("idadapter-v1", "tester", "expression")
    assert entry.generator.trained_with == ["sface"]
    assert (out / entry.references[0]).is_file() and entry.references[0].startswith("refs/")
    images = [out / e.image for e in manifest.entries]
    assert not list(out.glob("images/*.unsigned.png"))

    gov = GovernanceContext.load(workspace / "gov" / "governance.toml")
    results = gov.verify_provenance(images)
    assert [r.status for r in results] == ["trusted", "trusted"]
    assert {r.generator for r in results} == {"idadapter"}
    assert gov.verify_audit_log().ok
    signed = [e for e in gov.audit_log.entries() if e["action"] == "provenance.sign"]
    assert [e["subject"] for e in signed] == ["tester", "tester"]
    assert gov.audit_dir(out / "images").ok

    # a second run adds images and manifest lines without touching the first run's
    first = {p.name: p.read_bytes() for p in images}
    assert main(sample_args(workspace, tiny_base, "tester", faces_dir / "ardern_2018.jpg", "--seed", "9")) == 0
    assert all((out / "images" / name).read_bytes() == data for name, data in first.items())
    assert len(read_manifest(out / "manifest.jsonl").entries) == 4

    report = workspace / "report.html"
    result = subprocess.run([sys.executable, "-m", "eval.report", str(out / "manifest.jsonl"), "--out", str(report),
                             "--governance", str(workspace / "gov" / "governance.toml")],
                            check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tester" in report.read_text()


@pytest.mark.slow
def test_a_photo_without_a_face_stops_the_sampler_with_a_clear_message(workspace, tiny_base, capsys):
    blank = workspace / "wall.png"
    Image.new("RGB", (200, 200), (180, 170, 160)).save(blank)
    assert main(sample_args(workspace, tiny_base, "tester", blank)) == 2
    assert "wall.png: no face found" in capsys.readouterr().err
    assert not (workspace / "out").exists()


@pytest.mark.slow
def test_the_reference_can_come_from_the_encrypted_vault_through_the_gate(workspace, tiny_base, faces_dir):
    gov = GovernanceContext.load(workspace / "gov" / "governance.toml")
    photo = (faces_dir / "ardern_2022.jpg").read_bytes()
    file_id = gov.vault.put("tester", photo, purpose=Purpose.AVATAR_GENERATION, actor=Actor("registrar", "operator"))
    args = sample_args(workspace, tiny_base, "tester", "unused")
    args[args.index("--photo"):args.index("--photo") + 2] = ["--vault-photo", file_id]
    assert main(args) == 0
    entries = read_manifest(workspace / "out" / "manifest.jsonl").entries
    assert (workspace / "out" / entries[0].references[0]).read_bytes() == photo
    assert entries[0].generator.reference_identity == {"source": "vault", "verified": True}
    reads = [e for e in GovernanceContext.load(workspace / "gov" / "governance.toml").audit_log.entries()
             if e["action"] == "vault.read"]
    assert [(e["subject"], e["outcome"]) for e in reads] == [("tester", "ok")]


def enrol(workspace, subject, photo_path) -> str:
    gov = GovernanceContext.load(workspace / "gov" / "governance.toml")
    return gov.vault.put(subject, photo_path.read_bytes(), purpose=Purpose.AVATAR_GENERATION,
                         actor=Actor("registrar", "operator"))


def identity_checks(workspace) -> list[dict]:
    gov = GovernanceContext.load(workspace / "gov" / "governance.toml")
    assert gov.verify_audit_log().ok
    return [e for e in gov.audit_log.entries() if e["action"] == "idadapter.identity-check"]


# The demo photos stand in for the enrolled face of the neutral subject "tester" (their real
# subjects never get generation consent).
def test_a_photo_of_the_enrolled_person_is_verified_and_generates(workspace, tiny_base, faces_dir, capsys):
    file_id = enrol(workspace, "tester", faces_dir / "macron_2014.jpg")
    assert main(sample_args(workspace, tiny_base, "tester", faces_dir / "macron_2025.jpg")) == 0
    assert "warning" not in capsys.readouterr().err
    (check,) = identity_checks(workspace)
    assert (check["subject"], check["outcome"]) == ("tester", "ok")
    assert check["object"] == hashlib.sha256((faces_dir / "macron_2025.jpg").read_bytes()).hexdigest()
    details = check["details"]
    assert details["verified"] and details["enrolled_photos"] == 1 and details["recognizer"] == "sface"
    assert details["similarity"] >= details["threshold"] == default_threshold("sface")
    entries = read_manifest(workspace / "out" / "manifest.jsonl").entries
    assert len(entries) == 2
    assert entries[0].generator.reference_identity == {"source": "file", **details}
    reads = [e for e in GovernanceContext.load(workspace / "gov" / "governance.toml").audit_log.entries()
             if e["action"] == "vault.read"]
    assert [(e["actor"], e["subject"], e["object"], e["details"]["purpose"]) for e in reads] == [
        ("idadapter-sampler", "tester", file_id, "avatar-generation")]


def test_a_photo_of_someone_else_under_an_enrolled_subject_is_refused(workspace, tiny_base, faces_dir, capsys):
    enrol(workspace, "tester", faces_dir / "macron_2014.jpg")
    assert main(sample_args(workspace, tiny_base, "tester", faces_dir / "ardern_2018.jpg")) == EXIT_REFUSED
    error = capsys.readouterr().err
    assert "ardern_2018.jpg does not match the 1 photo(s) of subject 'tester'" in error
    assert f"threshold {default_threshold('sface')}" in error and "SFace similarity" in error
    assert not (workspace / "out").exists()
    (check,) = identity_checks(workspace)
    assert (check["subject"], check["outcome"]) == ("tester", "refused")
    details = check["details"]
    assert not details["verified"] and details["similarity"] < details["threshold"]
    assert f"SFace similarity {details['similarity']:.4f}" in error


def test_an_enrolment_without_a_face_cannot_vouch_for_any_photo(workspace, tiny_base, faces_dir, capsys):
    wall = workspace / "wall.png"
    Image.new("RGB", (200, 200), (180, 170, 160)).save(wall)
    enrol(workspace, "tester", wall)
    assert main(sample_args(workspace, tiny_base, "tester", faces_dir / "macron_2025.jpg")) == EXIT_REFUSED
    assert "no usable face" in capsys.readouterr().err
    (check,) = identity_checks(workspace)
    assert check["outcome"] == "refused" and check["details"]["similarity"] is None
    assert not (workspace / "out").exists()


def test_without_an_enrolled_photo_the_sampler_generates_with_a_warning(workspace, tiny_base, faces_dir, capsys):
    assert main(sample_args(workspace, tiny_base, "tester", faces_dir / "ardern_2018.jpg")) == 0
    error = capsys.readouterr().err
    assert "warning — the identity of" in error and "ardern_2018.jpg could not be verified" in error
    assert "no photo of subject 'tester' is enrolled in the vault" in error
    (check,) = identity_checks(workspace)
    assert check["outcome"] == "ok"
    assert check["details"] == {"verified": False, "enrolled_photos": 0, "recognizer": "sface", "similarity": None,
                                "threshold": default_threshold("sface")}
    entries = read_manifest(workspace / "out" / "manifest.jsonl").entries
    assert [e.generator.reference_identity["verified"] for e in entries] == [False, False]


def test_an_unreadable_photo_is_named(workspace, tiny_base, capsys):
    assert main(sample_args(workspace, tiny_base, "tester", workspace / "missing.jpg")) == 2
    assert "missing.jpg" in capsys.readouterr().err
