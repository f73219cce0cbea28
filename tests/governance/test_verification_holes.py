"""Holes an outside audit found: files audit-dir did not see, keys trusted because they sat beside the
log, malformed entries that crashed verification, unreadable files called tampered, signing failures
without a trace, and verification that demanded a workspace and a role."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tracemalloc
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from governance import Actor, Purpose
from governance.__main__ import main
from governance.audit_log import LEGACY_ORIGIN, AuditLog, generate_key_pair
from governance.checkpoint import VerifierKey
from governance.pki import init_test_pki
from governance.provenance import ProvenanceVerifier

REPO = Path(__file__).resolve().parents[2]
SAMPLER = Actor("idadapter-sampler", "operator")
FIELDS = ["seq", "time", "actor", "role", "action", "subject", "object", "outcome", "details", "prev", "sig"]


def config_of(gov) -> str:
    return str(gov.config.audit_log.parents[1] / "governance.toml")


def sign(gov, png, dest):
    record_id = gov.authorize("alice", Purpose.AVATAR_GENERATION, actor=SAMPLER)
    return gov.sign_output(png, dest=dest, subject="alice", consent_record_id=record_id, generator="idadapter",
                           model_version="0.1.0", actor=SAMPLER)


# -- 1. audit-dir sees every file -----------------------------------------------------------------

def test_audit_dir_fails_the_mixed_folder(gov, consented, png, tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    sign(gov, png, folder / "a.png")
    gov.audit_log.checkpoint()
    assert gov.audit_dir(folder).ok
    Image.open(png).save(folder / "b.gif")
    (folder / "sub").mkdir()
    shutil.copy(png, folder / "sub" / "c.png")
    shutil.copy(folder / "a.png", folder / ".hidden.png")  # a signed copy: hidden files are checked too
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "link.png").symlink_to(folder / "a.png")
    (folder / "linked-dir").symlink_to(outside, target_is_directory=True)
    report = gov.audit_dir(folder)
    rows = {row.image: " ".join(row.problems) for row in report.rows}
    assert not report.ok
    assert set(rows) == {"a.png", "b.gif", "sub/c.png", ".hidden.png", "link.png", "linked-dir"}
    assert rows["a.png"] == "" and rows[".hidden.png"] == ""
    assert rows["b.gif"].startswith("not checked: not a supported image type")
    assert "no-manifest" in rows["sub/c.png"]
    assert rows["link.png"] == f"not checked: symbolic link to {folder / 'a.png'} (not followed)"
    assert rows["linked-dir"] == f"not checked: symbolic link to {outside} (not followed)"
    assert main(["--config", config_of(gov), "audit-dir", str(folder)]) == 1
    assert "FAIL: 6 files, 4 failed" in capsys.readouterr().out


# -- 3. trust the key you were given ----------------------------------------------------------------

def test_a_replaced_workspace_key_passes_unpinned_and_fails_pinned(gov, tmp_path, capsys):
    assert main(["init", str(tmp_path / "second")]) == 0
    printed = capsys.readouterr().out
    assert "audit log vkey: idavatar-governance-audit/" in printed and "fingerprint: sha256:" in printed
    gov.audit_log.append(actor="olga", action="vault.read")
    genuine_vkey = str(gov.audit_vkey)
    # The attacker rewrites log and checkpoints under a key of their own and puts its public key beside the log.
    gov.config.audit_public_key.unlink()
    attacker = generate_key_pair(tmp_path / "attacker.pem", gov.config.audit_public_key)
    shutil.rmtree(gov.audit_log.checkpoints.directory)
    gov.config.audit_log.unlink()
    AuditLog(gov.config.audit_log, signing_key=attacker, origin=gov.config.audit_origin).append(
        actor="olga", action="nothing.happened")
    assert main(["--config", config_of(gov), "audit", "verify"]) == 0  # the workspace's own key: fooled
    assert "trusted key: the workspace's own" in capsys.readouterr().out
    assert main(["--config", config_of(gov), "audit", "verify", "--vkey", genuine_vkey]) == 1  # pinned: caught
    out = capsys.readouterr().out
    assert "NOT intact" in out and "trusted key: pinned" in out


# -- 4. errors that hid or crashed ------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@pytest.fixture(scope="module")
def small_log(tmp_path_factory):
    key = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path_factory.mktemp("log") / "audit.jsonl", signing_key=key, checkpoint_every=2)
    for i in range(4):
        log.append(actor="olga", action="vault.read", subject="alice", object=f"photo-{i}", details={"i": i})
    return log, key, log.path.read_bytes()


def canonical_or_plain(entry: dict) -> bytes:
    """The entry as a forger would write it: canonical JSON where RFC 8785 can encode it, plain JSON where not."""
    try:
        return rfc8785.dumps(entry)
    except (rfc8785.CanonicalizationError, ValueError):
        return json.dumps(entry, ensure_ascii=False).encode("utf-8", "surrogatepass")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entry=st.integers(1, 4), field=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_any_json_value_in_any_field_is_a_clean_failure_naming_the_entry(small_log, capsys, entry, field, value):
    log, key, original = small_log
    lines = original.splitlines()
    parsed = json.loads(lines[entry - 1])
    if parsed[field] == value and type(parsed[field]) is type(value):
        return
    parsed[field] = value
    lines[entry - 1] = canonical_or_plain(parsed)
    log.path.write_bytes(b"\n".join(lines) + b"\n")
    try:
        vkey = str(VerifierKey(LEGACY_ORIGIN, key.public_key()))
        code = main(["audit", "verify", "--log", str(log.path), "--vkey", vkey])
        out = capsys.readouterr().out
        assert code == 1 and f"NOT intact: entry {entry}: " in out, out
    finally:
        log.path.write_bytes(original)


def test_non_string_signature_and_unsafe_integer(small_log):
    log, key, original = small_log
    try:
        for field, value, reason in [("sig", 5, "field 'sig' is not a string"),
                                     ("details", {"n": 2 ** 60}, "not representable as RFC 8785")]:
            lines = original.splitlines()
            entry = json.loads(lines[1])
            entry[field] = value
            lines[1] = canonical_or_plain(entry)
            log.path.write_bytes(b"\n".join(lines) + b"\n")
            result = AuditLog(log.path, public_key=key.public_key(), checkpoint_every=2).verify()
            assert (result.ok, result.first_bad) == (False, 2) and reason in result.reason
    finally:
        log.path.write_bytes(original)


def test_unreadable_is_not_tampered(tmp_path, png):
    pki = init_test_pki(tmp_path / "pki")
    verifier = ProvenanceVerifier([pki.root_cert])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(png.read_bytes()[:40])
    (tmp_path / "folder.png").mkdir()
    for name in ("empty.png", "truncated.png", "folder.png", "missing.png"):
        result = verifier.verify(tmp_path / name)
        assert result.status == "unreadable" and not result.trusted, (name, result)


def test_unreadable_file_fails_audit_dir(gov, consented, png, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    sign(gov, png, folder / "a.png")
    (folder / "zero.png").write_bytes(b"")
    report = gov.audit_dir(folder)
    rows = {row.image: row for row in report.rows}
    assert not report.ok and rows["zero.png"].provenance == "unreadable"


def test_signing_failure_is_logged_before_it_raises(gov, consented, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(Exception):
        sign(gov, broken, tmp_path / "signed.png")
    last = gov.audit_log.entries()[-1]
    assert (last["action"], last["outcome"], last["object"]) == ("provenance.sign", "error", str(broken))
    assert last["details"]["reason"]
    assert gov.audit_log.verify().ok


def test_provenance_verify_streams_the_file(tmp_path):
    pki = init_test_pki(tmp_path / "pki")
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (2400, 2400, 3), dtype=np.uint8)).save(
        big, compress_level=0)
    assert big.stat().st_size > 16_000_000
    verifier = ProvenanceVerifier([pki.root_cert])
    tracemalloc.start()
    result = verifier.verify(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.status == "no-manifest"
    assert peak < big.stat().st_size / 8, f"Python peak {peak} bytes for a {big.stat().st_size}-byte file"


# -- 5. verification needs only public material ----------------------------------------------------

def test_verification_from_an_empty_folder_with_only_public_material(gov, consented, png, tmp_path):
    signed = sign(gov, png, tmp_path / "signed.png")
    gov.audit_log.checkpoint()
    vkey = str(gov.audit_vkey)
    # What an outside auditor is handed: the root certificate, the vkey, the log, its checkpoints,
    # the registry and the images. No keys, no governance.toml.
    handed = tmp_path / "handed"
    handed.mkdir()
    shutil.copy(gov.config.trust_anchors[0], handed / "root.pem")
    shutil.copy(gov.config.audit_log, handed / "audit.jsonl")
    shutil.copytree(gov.audit_log.checkpoints.directory, handed / "audit.jsonl.checkpoints")
    with closing(sqlite3.connect(gov.config.registry)) as source, \
            closing(sqlite3.connect(handed / "consent.sqlite")) as copy:
        source.backup(copy)  # a consistent copy, write-ahead log included
    (handed / "images").mkdir()
    shutil.copy(signed, handed / "images" / signed.name)
    env = {key: value for key, value in os.environ.items() if not key.startswith("GOVERNANCE_")}
    env["PYTHONPATH"] = str(REPO)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "governance", *args], cwd=handed, env=env,
                              capture_output=True, text=True, timeout=120)

    provenance = run("provenance", "verify", "images/signed.png", "--trust-anchor", "root.pem")
    assert provenance.returncode == 0 and ": trusted" in provenance.stdout, provenance.stderr
    audit = run("audit", "verify", "--log", "audit.jsonl", "--vkey", vkey)
    assert audit.returncode == 0 and "audit log intact" in audit.stdout, audit.stdout + audit.stderr
    compliance = run("--role", "reviewer", "audit-dir", "images", "--trust-anchor", "root.pem", "--log", "audit.jsonl",
                     "--vkey", vkey, "--registry", "consent.sqlite")
    assert compliance.returncode == 0 and "PASS: 1 files, 0 failed" in compliance.stdout, compliance.stdout
    assert sorted(p.name for p in handed.iterdir()) == [
        "audit.jsonl", "audit.jsonl.checkpoints", "consent.sqlite", "images", "root.pem"]
    missing = run("provenance", "verify", "images/signed.png")
    assert missing.returncode == 2
    assert missing.stderr.endswith("pass --trust-anchor ROOT.pem\n"), missing.stderr


def test_each_test_pki_root_has_its_own_name(tmp_path):
    names = set()
    for name in ("one", "two"):
        root = x509.load_pem_x509_certificate(init_test_pki(tmp_path / name).root_cert.read_bytes())
        common_name = root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert common_name.startswith("idavatar test root CA ")
        names.add(common_name)
    assert len(names) == 2
