import json
import shutil
from pathlib import Path

import pytest

from governance import Actor, ConsentRefused, PermissionDenied, Purpose, new_record
from governance.keys import LocalMasterKey, WrongMasterKey
from governance.roles import PERMISSIONS, Permission, Role, permission_table
from governance.vault import KeyShredded, PhotoVault, TamperedBlob

FACES = Path(__file__).resolve().parents[2] / "eval" / "demo" / "faces"
PHOTO = (FACES / "obama_senate.jpg").read_bytes()


def blob(gov, subject, file_id) -> Path:
    return gov.config.vault / "blobs" / subject / file_id


def test_round_trip_encrypts_at_rest_and_audits_the_actor(gov, consented, operator):
    file_id = gov.vault.put("alice", PHOTO, purpose="avatar-generation", actor=operator)
    stored = blob(gov, "alice", file_id).read_bytes()
    assert PHOTO[:64] not in stored and len(stored) == len(PHOTO) + 12 + 16  # nonce + GCM tag
    assert gov.vault.read("alice", file_id, purpose=Purpose.EVALUATION, actor=Actor("rita", "reviewer")) == PHOTO
    read = gov.audit_log.entries()[-1]
    assert (read["action"], read["actor"], read["role"], read["object"], read["details"]["purpose"]) == (
        "vault.read", "rita", "reviewer", file_id, "evaluation")


def test_reading_goes_through_the_consent_gate(gov, operator):
    gov.registry.add(new_record("obama", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="olga"))
    file_id = gov.vault.put("obama", PHOTO, purpose="evaluation", actor=operator)
    with pytest.raises(ConsentRefused, match="purpose not granted"):
        gov.vault.read("obama", file_id, purpose="avatar-generation", actor=operator)
    refused = gov.audit_log.entries()[-1]
    assert (refused["outcome"], refused["details"]["reason"]) == ("refused", "purpose not granted")
    with pytest.raises(ConsentRefused, match="no record"):
        gov.vault.put("nobody", PHOTO, purpose="evaluation", actor=operator)


def test_blob_moved_under_another_name_fails_to_decrypt(gov, consented, operator):
    gov.registry.add(new_record("bob", list(Purpose), controller="C", jurisdiction="EU", actor="olga"))
    first = gov.vault.put("alice", PHOTO, purpose="evaluation", actor=operator)
    second = gov.vault.put("alice", b"another photo", purpose="evaluation", actor=operator)
    shutil.copy(blob(gov, "alice", first), blob(gov, "alice", second))
    with pytest.raises(TamperedBlob, match="moved from another name"):
        gov.vault.read("alice", second, purpose="evaluation", actor=operator)
    bobs = gov.vault.put("bob", b"bob's photo", purpose="evaluation", actor=operator)
    shutil.copy(blob(gov, "alice", first), blob(gov, "bob", bobs))
    with pytest.raises(TamperedBlob):
        gov.vault.read("bob", bobs, purpose="evaluation", actor=operator)
    # A wrapped data key copied to another subject does not unwrap either.
    keys = gov.config.vault / "keys"
    stolen = json.loads((keys / "alice.key").read_text())
    (keys / "bob.key").write_text(json.dumps({**stolen, "subject": "bob"}))
    with pytest.raises(WrongMasterKey):
        gov.vault.read("bob", bobs, purpose="evaluation", actor=operator)


def test_wrong_master_key_cannot_read(gov, consented, operator):
    file_id = gov.vault.put("alice", PHOTO, purpose="evaluation", actor=operator)
    intruder = PhotoVault(gov.config.vault, LocalMasterKey(b"\x01" * 32), gov.registry, gov.audit_log)
    with pytest.raises(WrongMasterKey, match="wrong master key"):
        intruder.read("alice", file_id, purpose="evaluation", actor=operator)


def test_master_key_from_environment(monkeypatch):
    monkeypatch.setenv("GOVERNANCE_MASTER_KEY", "AAAA")
    with pytest.raises(ValueError, match="32 bytes"):
        LocalMasterKey.from_env()
    monkeypatch.delenv("GOVERNANCE_MASTER_KEY")
    with pytest.raises(KeyError, match="GOVERNANCE_MASTER_KEY"):
        LocalMasterKey.from_env()


def test_rotation_rewraps_keys_without_touching_photos(gov, consented, operator, admin, tmp_path):
    file_id = gov.vault.put("alice", PHOTO, purpose="evaluation", actor=operator)
    photo_before = blob(gov, "alice", file_id).read_bytes()
    key_before = (gov.config.vault / "keys" / "alice.key").read_text()
    old_key = gov.vault.master_key
    new_key = LocalMasterKey.generate_file(tmp_path / "new.key")
    with pytest.raises(PermissionDenied, match="role 'operator' lacks permission 'rotate'"):
        gov.vault.rotate_master_key(new_key, actor=operator)
    assert gov.vault.rotate_master_key(new_key, actor=admin) == 1
    assert blob(gov, "alice", file_id).read_bytes() == photo_before
    assert (gov.config.vault / "keys" / "alice.key").read_text() != key_before
    assert gov.vault.read("alice", file_id, purpose="evaluation", actor=operator) == PHOTO
    stale = PhotoVault(gov.config.vault, old_key, gov.registry, gov.audit_log)
    with pytest.raises(WrongMasterKey):
        stale.read("alice", file_id, purpose="evaluation", actor=operator)
    assert gov.vault.rotate_master_key(new_key, actor=admin) == 0  # rerunning is harmless


def test_withdrawal_crypto_shreds_every_copy(gov, consented, operator, tmp_path):
    file_id = gov.vault.put("alice", PHOTO, purpose="evaluation", actor=operator)
    backup = gov.vault.backup(tmp_path / "backup")
    assert gov.vault.read("alice", file_id, purpose="evaluation", actor=operator) == PHOTO  # before: readable

    assert gov.vault.withdraw("alice", actor=operator, reason="request #12") == [consented.record_id]

    assert not (gov.config.vault / "keys" / "alice.key").exists()
    shred = gov.audit_log.entries()[-1]
    assert (shred["action"], shred["details"]["key_shredded"], shred["details"]["records_withdrawn"]) == (
        "vault.withdraw", True, [consented.record_id])
    # Restoring the backup brings the ciphertext back, not the photo: the key is gone.
    shutil.copytree(backup / "blobs", gov.config.vault / "blobs", dirs_exist_ok=True)
    assert blob(gov, "alice", file_id).exists()
    gov.registry.add(new_record("alice", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="olga"))
    with pytest.raises(KeyShredded, match="crypto-shredded"):
        gov.vault.read("alice", file_id, purpose="evaluation", actor=operator)
    assert gov.verify_audit_log().ok


def test_permission_table_and_refusals_name_role_and_permission(gov, consented):
    assert PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    assert PERMISSIONS[Role.AUDITOR] == frozenset()  # verifying needs no permission
    assert "| rotate | - | - | - | yes |" in permission_table()
    auditor = Actor("aude", "auditor")
    with pytest.raises(PermissionDenied, match="actor 'aude': role 'auditor' lacks permission 'put'"):
        gov.vault.put("alice", PHOTO, purpose="evaluation", actor=auditor)
    refused = gov.audit_log.entries()[-1]
    assert (refused["action"], refused["outcome"], refused["actor"]) == ("vault.put", "refused", "aude")
    with pytest.raises(PermissionDenied, match="role 'reviewer' lacks permission 'withdraw'"):
        gov.vault.withdraw("alice", actor=Actor("rita", "reviewer"))
    with pytest.raises(PermissionDenied, match="role 'auditor' lacks permission 'record'"):
        gov.record_consent(new_record("eve", [Purpose.TRAINING], controller="C", jurisdiction="EU", actor="aude"),
                           actor=auditor)
    assert gov.registry.records_for("eve") == []
    with pytest.raises(ValueError):
        Actor("mallory", "superuser")


def test_concurrent_first_puts_share_one_data_key(gov, consented, operator):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: gov.vault.put("alice", PHOTO + bytes([i]), purpose="evaluation",
                                                    actor=operator), range(8)))
    assert [gov.vault.read("alice", file_id, purpose="evaluation", actor=operator) for file_id in ids] == [
        PHOTO + bytes([i]) for i in range(8)]
    assert gov.verify_audit_log().ok


def test_cli_rotate_and_backup(gov, consented, operator, tmp_path, capsys):
    from governance.__main__ import main
    config = ["--config", str(gov.config.audit_log.parents[1] / "governance.toml")]
    file_id = gov.vault.put("alice", PHOTO, purpose="evaluation", actor=operator)
    old_key = gov.config.master_key.read_text()
    assert main([*config, "vault", "rotate"]) == 2
    assert "role 'operator' lacks permission 'rotate'" in capsys.readouterr().err
    assert not gov.config.master_key.with_name("master.key.new").exists()
    assert main([*config, "--role", "admin", "vault", "rotate"]) == 0
    assert "re-wrapped 1 data keys" in capsys.readouterr().out
    assert gov.config.master_key.read_text() != old_key
    assert not gov.config.master_key.with_name("master.key.new").exists()
    assert main([*config, "vault", "read", file_id, "--subject", "alice", "--purpose", "evaluation",
                 "--out", str(tmp_path / "back.jpg")]) == 0
    assert (tmp_path / "back.jpg").read_bytes() == PHOTO
    assert main([*config, "vault", "backup", str(tmp_path / "backup")]) == 0
    assert [p.name for p in (tmp_path / "backup").rglob("*") if p.is_file()] == [file_id]
