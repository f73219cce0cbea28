"""Checkpoints that vanish, go back in time or are rolled back with the log; per-log origins; witnesses."""

import hashlib
import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from governance import GovernanceContext
from governance.__main__ import main
from governance.audit_log import LEGACY_ORIGIN, AuditLog
from governance.checkpoint import COSIGNATURE_V1, Checkpoint, CheckpointError, VerifierKey, cosign, cosigned_at
from governance.merkle import consistency_proof, leaf_hash, node_hash, root_of, verify_consistency

ORIGIN = "example.org/test-log"


def write_log(path, key, entries=10, every=4) -> AuditLog:
    log = AuditLog(path, signing_key=key, checkpoint_every=every, origin=ORIGIN)
    for i in range(entries):
        log.append(actor="olga", action="vault.read", subject="alice", object=f"photo-{i}")
    return log


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def log(tmp_path, key) -> AuditLog:
    return write_log(tmp_path / "audit.jsonl", key)  # checkpoints at 1, 4 and 8 entries


def vkey(key, name=ORIGIN) -> str:
    return str(VerifierKey(name, key.public_key()))


def cli_verify(log, key, *extra) -> int:
    return main(["audit", "verify", "--log", str(log.path), "--vkey", vkey(key), *extra])


def test_deleted_checkpoint_folder_fails_then_truncation_is_caught(log, key, capsys):
    shutil.rmtree(log.checkpoints.directory)
    result = log.verify()
    assert not result.ok and "10 entries and no signed checkpoint" in result.reason
    log.path.write_bytes(b"".join(log.path.read_bytes().splitlines(keepends=True)[:6]))
    assert cli_verify(log, key) == 1
    assert "no signed checkpoint" in capsys.readouterr().out
    assert cli_verify(log, key, "--allow-unchecked-tail", "6") == 0  # the documented escape hatch
    assert cli_verify(log, key, "--allow-unchecked-tail", "5") == 1


def test_newest_checkpoint_replaced_by_an_older_one(log):
    paths = log.checkpoints.paths()
    paths[-1].write_bytes(paths[-2].read_bytes())  # 8 -> the signed note of 4
    result = log.verify()
    assert not result.ok and "its name says 8 entries, its signature 4" in result.reason


def test_deleting_the_newest_checkpoints_leaves_too_long_a_tail(log):
    log.checkpoints.paths()[-1].unlink()  # newest is now 4: 6 unchecked entries > checkpoint_every 4
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 5) and "6 entries after the newest" in result.reason


def test_state_catches_a_rollback_of_log_and_checkpoints_together(log, key, tmp_path, capsys):
    state = tmp_path / "verifier-state.note"
    assert cli_verify(log, key, "--state", str(state)) == 0
    assert Checkpoint.parse_and_verify(state.read_text(), key.public_key()).size == 8
    # Cut log and checkpoints back to 5 entries together: consistent on its own, but not with the state.
    log.path.write_bytes(b"".join(log.path.read_bytes().splitlines(keepends=True)[:5]))
    log.checkpoints.paths()[-1].unlink()
    assert log.verify().ok
    assert cli_verify(log, key, "--state", str(state)) == 1
    assert "rolled back: a signed checkpoint of 8 entries was accepted before" in capsys.readouterr().out


def test_state_catches_history_rewritten_with_the_key(log, key, tmp_path, capsys):
    state = tmp_path / "state.note"
    assert cli_verify(log, key, "--state", str(state)) == 0
    shutil.rmtree(log.checkpoints.directory)
    log.path.unlink()
    rewritten = write_log(log.path, key, entries=12)  # a new, self-consistent history under the same key
    assert rewritten.verify().ok
    assert cli_verify(log, key, "--state", str(state)) == 1
    assert "not an append-only extension of the checkpoint of 8 entries" in capsys.readouterr().out


def test_state_follows_an_honest_log_forward(log, key, tmp_path, capsys):
    state = tmp_path / "state.note"
    assert cli_verify(log, key, "--state", str(state)) == 0
    for i in range(5):
        log.append(actor="olga", action="vault.read", object=f"later-{i}")
    assert cli_verify(log, key, "--state", str(state)) == 0
    assert "consistent with the remembered checkpoint of 8 entries" in capsys.readouterr().out
    assert Checkpoint.parse_and_verify(state.read_text(), key.public_key()).size == 12


@settings(max_examples=150, deadline=None)
@given(leaves=st.lists(st.binary(max_size=4), min_size=1, max_size=70), data=st.data())
def test_consistency_proofs_follow_rfc9162(leaves, data):
    hashes = [leaf_hash(leaf) for leaf in leaves]
    old_size = data.draw(st.integers(0, len(hashes)))
    old_root, new_root = root_of(hashes[:old_size]), root_of(hashes)
    proof = consistency_proof(hashes, old_size)
    assert verify_consistency(old_size, len(hashes), old_root, new_root, proof)
    if 0 < old_size < len(hashes):
        forged = node_hash(old_root, b"\0" * 32)
        assert not verify_consistency(old_size, len(hashes), forged, new_root, proof)
        assert not verify_consistency(old_size, len(hashes), old_root, forged, proof)
        assert not verify_consistency(len(hashes), old_size, new_root, old_root, proof)  # shrinking
        if proof:
            assert not verify_consistency(old_size, len(hashes), old_root, new_root, proof[:-1])


def test_witness_cosignature(log, key, tmp_path, capsys):
    witness_key = tmp_path / "witness.pem"
    assert main(["audit", "witness", "keygen", str(witness_key), "--name", "witness.example/w1"]) == 0
    witness_vkey = capsys.readouterr().out.split("witness vkey: ")[1].strip()
    assert VerifierKey.parse(witness_vkey).algorithm == COSIGNATURE_V1
    assert cli_verify(log, key, "--witness", witness_vkey) == 1
    assert "no checkpoint carries a valid cosignature by witness 'witness.example/w1'" in capsys.readouterr().out

    newest = log.checkpoints.paths()[-1]
    cosign_args = ["audit", "witness", "cosign", str(newest), "--key", str(witness_key), "--name", "witness.example/w1"]
    other_log = vkey(Ed25519PrivateKey.generate())
    assert main([*cosign_args, "--vkey", other_log]) == 2  # not signed by that log: the witness refuses
    assert "no signature by key 'example.org/test-log'" in capsys.readouterr().err
    assert main([*cosign_args, "--vkey", vkey(key)]) == 0
    assert cli_verify(log, key, "--witness", witness_vkey) == 0
    assert "witness witness.example/w1 cosigned the first 8 entries at" in capsys.readouterr().out
    log.checkpoint()  # re-signing the same tree keeps the cosignature
    assert cosigned_at(newest.read_text(), VerifierKey.parse(witness_vkey)) is not None

    other = VerifierKey("witness.example/w1", Ed25519PrivateKey.generate().public_key(), COSIGNATURE_V1)
    assert cli_verify(log, key, "--witness", str(other)) == 1  # same name, another key
    assert cli_verify(log, key, "--witness", vkey(key)) == 2  # the log's key is no witness key
    assert "not a witness key (0x04)" in capsys.readouterr().err


def test_forged_cosignature_is_refused(log, tmp_path):
    witness = Ed25519PrivateKey.generate()
    witness_vkey = VerifierKey("w", witness.public_key(), COSIGNATURE_V1)
    note = log.checkpoints.paths()[-1].read_text()
    signed = cosign(note, "w", witness, timestamp=1_700_000_000)
    assert cosigned_at(signed, witness_vkey) == 1_700_000_000
    assert cosigned_at(signed.replace("\n8\n", "\n9\n"), witness_vkey) is None
    with pytest.raises(CheckpointError, match="key name 'two words'"):
        cosign(note, "two words", witness)


def test_each_workspace_has_its_own_origin_and_old_logs_still_verify(tmp_path, key, capsys):
    first = GovernanceContext.init(tmp_path / "a")
    second = GovernanceContext.init(tmp_path / "b")
    assert first.config.audit_origin != second.config.audit_origin
    assert first.config.audit_origin.startswith(LEGACY_ORIGIN + "/")
    first.audit_log.append(actor="olga", action="test")
    note = first.audit_log.checkpoints.paths()[-1].read_text()
    assert note.startswith(first.config.audit_origin + "\n")
    # A log from before the origin was configurable: the legacy origin, no audit_origin in its config.
    legacy = AuditLog(tmp_path / "old.jsonl", signing_key=key, checkpoint_every=4)
    legacy.append(actor="olga", action="test")
    assert legacy.checkpoints.paths()[-1].read_text().startswith(LEGACY_ORIGIN + "\n")
    assert main(["audit", "verify", "--log", str(legacy.path), "--vkey", vkey(key, LEGACY_ORIGIN)]) == 0
    # A checkpoint under another origin is refused when the vkey pins the origin.
    assert main(["audit", "verify", "--log", str(legacy.path), "--vkey", vkey(key, "other/log")]) == 1
    assert "origin 'idavatar-governance-audit', expected 'other/log'" in capsys.readouterr().out


def test_vkey_strings_are_checked():
    key = Ed25519PrivateKey.generate()
    text = vkey(key)
    assert VerifierKey.parse(text).name == ORIGIN
    name, key_id, encoded = text.split("+", 2)
    assert key_id == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + VerifierKey.parse(text).public_key
                                    .public_bytes_raw()).digest()[:4].hex()
    with pytest.raises(CheckpointError, match="does not match"):
        VerifierKey.parse(f"{name}+00000000+{encoded}")
    with pytest.raises(CheckpointError, match="not a vkey"):
        VerifierKey.parse("nonsense")
