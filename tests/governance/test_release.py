"""Release: only approved, consented images leave, watermarked and re-signed, in a signed folder."""

import base64
import datetime as dt
import io
import json
import shutil
from pathlib import Path

import c2pa
import pytest
import rfc8785
from PIL import Image

from governance import Actor, Purpose, new_record
from governance.__main__ import main as governance_cli
from governance.consent import UsageLimits
from governance.provenance import file_digest
from governance.release import RELEASE_MANIFEST, RELEASE_SIGNATURE, release
from governance.review_log import APPROVE, DECISION, REJECT, log_review_action

REPO = Path(__file__).resolve().parents[2]
PHOTOS = sorted((REPO / "eval" / "demo" / "faces").glob("*.jpg"))
RELEASER = Actor("rita", "operator")


def square(photo: Path, size: int = 512) -> Image.Image:
    with Image.open(photo) as image:
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def make_run(run: Path, gov, record, count: int = 3, category: str = "expression") -> list[Path]:
    """A run folder as the sampler writes it: signed PNGs (bundled photos standing in) and manifest.jsonl."""
    (run / "images").mkdir(parents=True)
    images = []
    with (run / "manifest.jsonl").open("w") as manifest:
        for index, photo in enumerate(PHOTOS[:count]):
            unsigned = run / f"unsigned_{index}.png"
            square(photo).save(unsigned)
            path = run / "images" / f"{record.subject}_{index:04d}.png"
            gov.sign_output(unsigned, subject=record.subject, consent_record_id=record.record_id,
                            generator="idadapter", model_version="0.1.0", actor=Actor("olga", "operator"), dest=path)
            unsigned.unlink()
            manifest.write(json.dumps({"system": "idadapter-v1", "subject": record.subject,
                                       "references": ["refs/x.jpg"], "prompt": "a photo",
                                       "prompt_category": category, "image": f"images/{path.name}"}) + "\n")
            images.append(path)
    return images


def decide(gov, image: Path, decision: str, *, actor: str = "anna", role: str = "approver", reason: str | None = None):
    return log_review_action(gov.audit_log, action=DECISION, actor=actor, role=role, image_sha256=file_digest(image),
                             subject="alice", details={"decision": decision, "reason": reason, "run": "run", "line": 1})


@pytest.fixture
def run(tmp_path, gov, consented):
    return make_run(tmp_path / "run", gov, consented)


def reasons(result) -> dict[str, str]:
    return {Path(left.image).name: left.reason for left in result.left_behind}


def test_releases_exactly_the_approved_and_says_why_the_rest_stayed(tmp_path, gov, consented, run):
    decide(gov, run[0], APPROVE)
    decide(gov, run[1], APPROVE)
    rejection = decide(gov, run[2], REJECT, reason="hands look wrong")
    before = len(list(gov.audit_log.entries()))

    result = release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)

    assert [item["file"] for item in result.items] == [run[0].name, run[1].name]
    assert reasons(result) == {run[2].name: f"rejected by anna at {rejection['time']}: hands look wrong "
                                            f"(audit entry {rejection['seq']})"}
    entries = list(gov.audit_log.entries())
    assert len(entries) == before + 1
    assert entries[-1]["action"] == "release" and entries[-1]["seq"] == result.audit_entry
    folder = tmp_path / "rel"
    assert sorted(p.name for p in folder.iterdir()) == sorted([run[0].name, run[1].name, RELEASE_MANIFEST,
                                                               RELEASE_SIGNATURE])
    canonical = (folder / RELEASE_MANIFEST).read_bytes()
    document = json.loads(canonical)
    assert rfc8785.dumps(document) == canonical
    gov.audit_log.public_key.verify(base64.b64decode((folder / RELEASE_SIGNATURE).read_text()), canonical)
    item = document["items"][0]
    assert item["sha256"] == file_digest(folder / item["file"]) and item["consent_record_id"] == consented.record_id
    assert item["approval"]["audit_entry"] == entries[before - 3]["seq"]
    report = gov.audit_dir(folder)
    assert report.ok, report.table()


def test_released_manifest_has_parent_approval_consent_and_training_mining(tmp_path, gov, consented, run):
    approval = decide(gov, run[0], APPROVE)
    result = release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    released = tmp_path / "rel" / result.items[0]["file"]
    verified = gov.verifier.verify(released)
    assert verified.trusted and verified.ai_generated and verified.consent_record_id == consented.record_id
    reader = c2pa.Reader.try_create("image/png", io.BytesIO(released.read_bytes()), None, gov.verifier._context)
    with reader:
        manifest = reader.get_active_manifest()
    [parent] = manifest["ingredients"]
    assert parent["relationship"] == "parentOf" and parent["title"] == run[0].name
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    assert assertions["com.idavatar.approval"]["audit_entry"] == approval["seq"]
    assert assertions["com.idavatar.approval"]["actor"] == "anna"
    assert assertions["com.idavatar.approval"]["entry_hash"].startswith("sha256:")
    assert {entry["use"] for entry in assertions["cawg.training-mining"]["entries"].values()} == {"notAllowed"}
    assert base64.b64decode(assertions["c2pa.soft-binding"]["blocks"][0]["value"]).hex() == result.items[0]["watermark"]


def test_training_mining_allowed_only_when_the_record_grants_it(tmp_path, gov):
    record = gov.registry.add(new_record("alice", list(Purpose), controller="c", jurisdiction="EU", actor="o",
                                         usage_limits=UsageLimits(training_mining_allowed=True)))
    images = make_run(tmp_path / "run", gov, record, count=1)
    decide(gov, images[0], APPROVE)
    result = release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    reader = c2pa.Reader.try_create("image/png", io.BytesIO((tmp_path / "rel" / result.items[0]["file"]).read_bytes()),
                                    None, gov.verifier._context)
    with reader:
        assertions = {a["label"]: a["data"] for a in reader.get_active_manifest()["assertions"]}
    assert {entry["use"] for entry in assertions["cawg.training-mining"]["entries"].values()} == {"allowed"}


def test_later_rejection_withdrawal_reviewer_role_and_no_decision_each_keep_an_image_back(tmp_path, gov, run):
    decide(gov, run[0], APPROVE)
    decide(gov, run[0], REJECT, actor="bob", reason="changed my mind")
    decide(gov, run[1], APPROVE, actor="rex", role="reviewer")
    result = release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    left = reasons(result)
    assert not result.items and result.folder is None and not (tmp_path / "rel").exists()
    assert left[run[0].name].startswith("rejected by bob") and "changed my mind" in left[run[0].name]
    assert left[run[1].name] == "approved by rex, whose role 'reviewer' may not approve a release"
    assert left[run[2].name] == "not approved: no review decision on this file in the audit log"
    assert list(gov.audit_log.entries())[-1]["outcome"] == "refused"

    decide(gov, run[2], APPROVE)
    gov.registry.withdraw("alice", actor="alice")
    result = release(tmp_path / "run", tmp_path / "rel2", gov, actor=RELEASER)
    assert reasons(result)[run[2].name].startswith("consent for avatar-generation withdrawn")


def test_a_tampered_original_is_left_behind(tmp_path, gov, run):
    decide(gov, run[0], APPROVE)
    pixels = bytearray(run[0].read_bytes())
    pixels[-100] ^= 0xFF  # inside the image data, after the manifest
    run[0].write_bytes(bytes(pixels))
    decide(gov, run[0], APPROVE)  # an approval of the changed file does not make its provenance trusted
    result = release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    assert reasons(result)[run[0].name].startswith("provenance ")


@pytest.mark.parametrize("change", ["added", "removed", "changed", "manifest edited", "signature removed"])
def test_audit_dir_fails_on_a_release_folder_with_any_change(tmp_path, gov, run, change):
    decide(gov, run[0], APPROVE)
    decide(gov, run[1], APPROVE)
    result = release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    folder = tmp_path / "rel"
    first = folder / result.items[0]["file"]
    if change == "added":
        shutil.copy(run[2], folder / run[2].name)
    elif change == "removed":
        first.unlink()
    elif change == "changed":
        square(PHOTOS[5]).save(first)
    elif change == "manifest edited":
        document = json.loads((folder / RELEASE_MANIFEST).read_bytes())
        document["items"][0]["consent_record_id"] = "urn:uuid:someone-else"
        (folder / RELEASE_MANIFEST).write_bytes(rfc8785.dumps(document))
    else:
        (folder / RELEASE_SIGNATURE).unlink()
    report = gov.audit_dir(folder)
    assert not report.ok
    problems = "; ".join(p for row in report.rows for p in row.problems)
    expected = {"added": "not listed in release.json", "removed": "listed in release.json but missing",
                "changed": "changed since the release", "manifest edited": "differs from the release.json",
                "signature removed": "not a valid Ed25519 signature"}[change]
    assert expected in problems, report.table()


def test_release_refuses_past_the_consent_records_count_and_category(tmp_path, gov):
    record = gov.registry.add(new_record("alice", list(Purpose), controller="c", jurisdiction="EU", actor="o",
                                         usage_limits=UsageLimits(max_released_avatars=2)))
    images = make_run(tmp_path / "run", gov, record, count=3)
    for image in images:
        decide(gov, image, APPROVE)
    first = release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    assert len(first.items) == 2
    assert reasons(first)[images[2].name] == "the consent record allows at most 2 released avatars and 2 are released"
    again = release(tmp_path / "run", tmp_path / "rel2", gov, actor=RELEASER)  # counts every earlier release
    assert not again.items and len(again.left_behind) == 3

    scenes = gov.registry.add(new_record("bob", list(Purpose), controller="c", jurisdiction="EU", actor="o",
                                         usage_limits=UsageLimits(allowed_prompt_categories=["identity"])))
    bobs = make_run(tmp_path / "bobrun", gov, scenes, count=1, category="scene")
    decide(gov, bobs[0], APPROVE)
    refused = release(tmp_path / "bobrun", tmp_path / "rel3", gov, actor=RELEASER)
    assert reasons(refused)[bobs[0].name] == ("prompt category 'scene' not allowed by the consent record "
                                              "(allowed: identity)")


def test_audit_dir_fails_once_the_release_permission_expired(tmp_path, gov):
    record = gov.registry.add(new_record("alice", list(Purpose), controller="c", jurisdiction="EU", actor="o",
                                         usage_limits=UsageLimits(release_permission=dt.timedelta(microseconds=1))))
    images = make_run(tmp_path / "run", gov, record, count=1)
    decide(gov, images[0], APPROVE)
    release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    report = gov.audit_dir(tmp_path / "rel")
    assert not report.ok and "release permission expired" in report.table()


def test_cli_exit_status_partial_and_json(tmp_path, gov, run, capsys):
    config = str(gov.config.audit_log.parents[1] / "governance.toml")
    decide(gov, run[0], APPROVE)
    assert governance_cli(["--config", config, "release", str(tmp_path / "run"), "--to", str(tmp_path / "a")]) == 1
    out = capsys.readouterr().out
    assert f"left behind images/{run[1].name}: not approved" in out and "1 released, 2 left behind" in out
    assert governance_cli(["--config", config, "release", str(tmp_path / "run"), "--to", str(tmp_path / "b"),
                           "--allow-partial", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["released"] == 1
    assert governance_cli(["--config", config, "release", str(tmp_path / "run"), "--to", str(tmp_path / "b")]) == 2
    assert "release folder exists and is not empty" in capsys.readouterr().err
    assert governance_cli(["--config", config, "--role", "auditor", "release", str(tmp_path / "run"),
                           "--to", str(tmp_path / "c")]) == 2
    assert "lacks permission 'sign'" in capsys.readouterr().err


def test_bad_manifest_lines_and_missing_files_are_listed_and_the_rest_released(tmp_path, gov, run):
    decide(gov, run[0], APPROVE)
    with (tmp_path / "run" / "manifest.jsonl").open("a") as manifest:
        manifest.write("{not json\n")
        manifest.write(json.dumps({"image": "../outside.png"}) + "\n")
        manifest.write(json.dumps({"image": "images/gone.png"}) + "\n")
    result = release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    assert len(result.items) == 1
    by_line = {left.line: left.reason for left in result.left_behind}
    assert by_line[4].startswith("bad manifest line") and "leaves the run folder" in by_line[5]
    assert by_line[6].endswith("file not found")


def test_nothing_is_written_when_the_release_cannot_be_logged(tmp_path, gov, run):
    decide(gov, run[0], APPROVE)
    log = tmp_path / "gov" / "audit" / "audit.jsonl"
    data = bytearray(log.read_bytes())
    data[150] ^= 1
    log.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="audit log NOT intact.*approvals cannot be trusted"):
        release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    gov.audit_log.signing_key = None
    with pytest.raises(ValueError, match="no audit signing key configured"):
        release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gov", "run"]  # no release folder, no staging left
