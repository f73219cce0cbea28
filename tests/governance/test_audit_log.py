import base64
import hashlib
import multiprocessing
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.__main__ import main
from governance.audit_log import (
    AuditLog, AuditVerification, TornTailWarning, generate_key_pair, line_hash, load_private_key,
)
from governance.checkpoint import Checkpoint, CheckpointError, key_id
from governance.merkle import MerkleTree, leaf_hash, node_hash


@pytest.fixture
def keys(tmp_path):
    private, public = tmp_path / "audit.pem", tmp_path / "audit.pub.pem"
    generate_key_pair(private, public)
    return private, public


def write_log(path: Path, key, entries: int = 10, every: int = 4) -> AuditLog:
    log = AuditLog(path, signing_key=key, checkpoint_every=every)
    for i in range(entries):
        log.append(actor="olga", role="operator", action="vault.read", subject="alice", object=f"photo-{i}")
    return log


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def log(tmp_path, keys) -> AuditLog:
    return write_log(tmp_path / "audit.jsonl", load_private_key(keys[0]))


def test_intact_log_verifies_with_checkpoints(log):
    result = log.verify()
    assert (result.ok, result.entries, result.checkpoints) == (True, 10, 3)  # at 1, 4 and 8
    first = log.entries()[0]
    assert set(first) == {"seq", "time", "actor", "role", "action", "subject", "object", "outcome", "details",
                          "prev", "sig"}
    assert first["time"].endswith("+00:00")
    assert log.entries()[1]["prev"] == line_hash(lines(log.path)[0][:-1])
    assert lines(log.path)[0][:-1] == rfc8785.dumps(first)


def tamper(log: AuditLog, edit) -> AuditVerification:
    content = lines(log.path)
    log.path.write_bytes(b"".join(edit(content)))
    return log.verify()


def test_edited_entry(log):
    result = tamper(log, lambda ls: [*ls[:4], ls[4].replace(b'"olga"', b'"olgb"'), *ls[5:]])
    assert (result.ok, result.first_bad) == (False, 5) and "signature invalid" in result.reason


def test_deleted_entry(log):
    result = tamper(log, lambda ls: [*ls[:4], *ls[5:]])
    assert (result.ok, result.first_bad) == (False, 5) and "expected 5" in result.reason


def test_reordered_entries(log):
    result = tamper(log, lambda ls: [*ls[:4], ls[5], ls[4], *ls[6:]])
    assert (result.ok, result.first_bad) == (False, 5)


def test_inserted_entry(log):
    result = tamper(log, lambda ls: [*ls[:5], ls[2], *ls[5:]])
    assert (result.ok, result.first_bad) == (False, 6)


def test_forged_entries_signed_by_another_key(log, tmp_path):
    """A forger without the key can build a perfect chain, but not the signatures."""
    forger = AuditLog(tmp_path / "forged.jsonl", signing_key=Ed25519PrivateKey.generate(), checkpoint_every=0)
    forged = lines(log.path)[:6]
    forger.path.write_bytes(b"".join(forged))
    forger.append(actor="mallory", action="vault.read", subject="alice", object="photo-x")
    log.path.write_bytes(forger.path.read_bytes())
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 7) and "forged" in result.reason


def test_truncation_behind_a_checkpoint(log):
    result = tamper(log, lambda ls: ls[:7])  # checkpoint at 8 entries
    assert (result.ok, result.first_bad) == (False, 8) and "truncated" in result.reason


def test_rewritten_history_does_not_match_its_checkpoint(log, keys):
    """Even the key holder cannot quietly rewrite history: the signed checkpoints pin it."""
    original = log.path.read_bytes()
    log.path.unlink()
    rewritten = write_log(log.path, load_private_key(keys[0]), entries=10, every=0)
    assert log.path.read_bytes() != original
    result = rewritten.verify()
    assert not result.ok and "do not match their signed checkpoint" in result.reason


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_single_byte_edit_is_detected(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("edit") / "audit.jsonl"
    log = write_log(path, Ed25519PrivateKey.generate(), entries=4, every=2)
    content = bytearray(path.read_bytes())
    position = data.draw(st.integers(0, len(content) - 1))
    content[position] = data.draw(st.integers(0, 255).filter(lambda b: b != content[position]))
    path.write_bytes(bytes(content))
    assert not log.verify().ok


def test_cli_names_the_first_bad_entry(log, keys, capsys):
    assert main(["--role", "auditor", "audit", "verify", "--log", str(log.path), "--public-key", str(keys[1])]) == 0
    content = bytearray(log.path.read_bytes())
    content[len(lines(log.path)[0]) + 30] ^= 0x01  # one byte inside entry 2
    log.path.write_bytes(bytes(content))
    assert main(["--role", "auditor", "audit", "verify", "--log", str(log.path), "--public-key", str(keys[1])]) == 1
    assert "entry 2:" in capsys.readouterr().out


def _append_many(path: str, key_path: str, writer: int, count: int) -> None:
    log = AuditLog(path, signing_key=load_private_key(key_path), checkpoint_every=16)
    for i in range(count):
        log.append(actor=f"writer-{writer}", action="test.append", object=str(i))


@pytest.mark.slow
def test_concurrent_processes_lose_and_tear_nothing(tmp_path, keys):
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(path), str(keys[0]), w, 40)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    log = AuditLog(path, signing_key=load_private_key(keys[0]))
    assert log.verify().ok
    written = sorted((e["actor"], int(e["object"])) for e in log.entries())
    assert written == sorted((f"writer-{w}", i) for w in range(4) for i in range(40))


CRASHING_WRITER = textwrap.dedent("""
    import os, signal, sys
    import governance.audit_log as audit_log
    log = audit_log.AuditLog(sys.argv[1], signing_key=audit_log.load_private_key(sys.argv[2]), checkpoint_every=0)
    log.append(actor="olga", action="before.crash")
    real_write = os.write
    def torn_write(fd, data):
        real_write(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    audit_log.os.write = torn_write
    log.append(actor="olga", action="during.crash", object="x" * 200)
""")


def test_process_killed_mid_append(tmp_path, keys):
    path = tmp_path / "audit.jsonl"
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(path), str(keys[0])])
    assert crashed.returncode == -9
    torn_bytes = path.read_bytes().split(b"\n")[-1]
    assert torn_bytes  # half an entry, no newline

    with pytest.warns(TornTailWarning, match="torn last entry .line 2"):
        log = AuditLog(path, signing_key=load_private_key(keys[0]), checkpoint_every=0)
    result = log.verify()
    assert (result.ok, result.first_bad) == (False, 2) and "torn" in result.reason

    log.append(actor="olga", action="after.crash")
    actions = [e["action"] for e in log.entries()]
    assert actions == ["before.crash", "audit.recover-torn-entry", "after.crash"]  # not dropped, not merged
    recovery = log.entries()[1]
    assert (tmp_path / recovery["object"]).read_bytes() == torn_bytes
    assert recovery["details"]["sha256"] == hashlib.sha256(torn_bytes).hexdigest()
    assert log.verify(allow_unchecked_tail=3).ok
    log.checkpoint()
    assert log.verify().ok


def test_checkpoint_is_a_c2sp_signed_note(log, keys):
    key = load_private_key(keys[0])
    note = log.checkpoints.paths()[-1].read_text()
    origin, size, root, blank, signature_line, end = note.split("\n")
    assert (origin, size, blank, end) == ("idavatar-governance-audit", "8", "", "")
    name, signature = signature_line.removeprefix("\u2014 ").split(" ")
    raw = base64.b64decode(signature)
    assert name == origin and raw[:4] == key_id(origin, key.public_key()) and len(raw) == 68
    key.public_key().verify(raw[4:], f"{origin}\n{size}\n{root}\n".encode())
    assert Checkpoint.parse_and_verify(note, key.public_key()).size == 8
    with pytest.raises(CheckpointError, match="signature invalid"):
        Checkpoint.parse_and_verify(note.replace("\n8\n", "\n9\n"), key.public_key())


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, written out recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(reference_root(leaves[:split]), reference_root(leaves[split:]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=40))
def test_merkle_root_matches_rfc9162(leaves):
    tree = MerkleTree()
    for leaf in leaves:
        tree.append(leaf)
    assert tree.root() == reference_root(leaves)
