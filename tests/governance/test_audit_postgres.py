"""The audit log on a real PostgreSQL server: same entries and proofs as the file, one chain for many writers."""
import multiprocessing
import threading
import time

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance import GovernanceContext, Purpose, new_record
from governance.audit_log import AuditLog, load_private_key
from governance.audit_sql import AuditStoreError, SqlAuditLog
from governance.database import StoreUnavailable

from .conftest import workspace_on

ORIGIN = "example.org/audit/test"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_entries_checkpoints_and_verification_are_those_of_the_file_log(postgres_url, key, tmp_path):
    log = SqlAuditLog(postgres_url, signing_key=key, checkpoint_every=4, origin=ORIGIN)
    for index in range(10):
        log.append(actor="olga", role="operator", action="vault.read", subject="alice", object=str(index),
                   details={"n": index})
    result = log.verify()
    assert result.ok and (result.entries, result.checkpoints) == (10, 3)  # sizes 1, 4 and 8
    assert [entry["seq"] for entry in log.entries()] == list(range(1, 11))

    exported, folder = log.export(tmp_path / "export.jsonl")
    from_file = AuditLog(exported, public_key=key.public_key(), checkpoint_dir=folder, checkpoint_every=4,
                         origin=ORIGIN).verify()
    assert from_file.ok and (from_file.entries, from_file.checkpoints) == (10, 3)
    assert exported.read_bytes().splitlines() == list(log.lines())


def test_an_edited_or_deleted_row_is_caught_naming_the_entry(postgres_url, key):
    log = SqlAuditLog(postgres_url, signing_key=key, checkpoint_every=4, origin=ORIGIN)
    for index in range(9):
        log.append(actor="olga", action="vault.read", object=str(index))
    from governance.audit_sql import _entries
    with log.engine.begin() as db:
        line = db.execute(sa.select(_entries.c.line).where(_entries.c.seq == 3)).scalar()
        db.execute(_entries.update().where(_entries.c.seq == 3).values(line=line.replace('"2"', '"X"')))
    result = log.verify()
    assert not result.ok and result.first_bad == 3 and "signature invalid" in result.reason
    with log.engine.begin() as db:
        db.execute(_entries.update().where(_entries.c.seq == 3).values(line=line))
        db.execute(_entries.delete().where(_entries.c.seq >= 7))
    cut = log.verify()
    assert not cut.ok and "truncated" in cut.reason


def _writer(config: str, worker: int, count: int) -> None:
    gov = GovernanceContext.load(config)
    for index in range(count):
        subject = f"p{worker}-{index}"
        gov.record_consent(new_record(subject, [Purpose.EVALUATION], controller="C", jurisdiction="EU",
                                      actor=f"w{worker}"), actor=_operator(worker))
        gov.audit_log.append(actor=f"w{worker}", action="test.append", object=f"{worker}:{index}")


def _operator(worker: int):
    from governance import Actor
    return Actor(f"w{worker}", "operator")


def _shared_workspace(tmp_path, url: str) -> str:
    workspace_on(tmp_path, url)
    config = tmp_path / "gov" / "governance.toml"
    config.write_text(config.read_text().replace('audit_log = "audit/audit.jsonl"', f'audit_log = "{url}"'))
    return str(config)


def test_eight_processes_write_one_unforked_chain(tmp_path, postgres_url):
    config = _shared_workspace(tmp_path, postgres_url)
    GovernanceContext.load(config).audit_log.checkpoint()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(config, worker, 20)) for worker in range(8)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(180)
    assert [process.exitcode for process in workers] == [0] * 8
    gov = GovernanceContext.load(config)
    entries = gov.audit_log.entries()
    assert [entry["seq"] for entry in entries] == list(range(1, len(entries) + 1))  # no gaps, no forks
    appended = [entry["object"] for entry in entries if entry["action"] == "test.append"]
    assert sorted(appended) == sorted(f"{w}:{i}" for w in range(8) for i in range(20))  # 0 lost, 0 duplicated
    assert sum(entry["action"] == "consent.record" for entry in entries) == 160
    assert gov.audit_log.verify().ok


def test_a_server_restart_mid_run_is_waited_out_and_nothing_is_half_written(postgres_cluster, postgres_url, key):
    log = SqlAuditLog(postgres_url, signing_key=key, checkpoint_every=50, origin=ORIGIN)
    done, unknown, stop = [], [], threading.Event()

    def write() -> None:
        while not stop.is_set() and len(done) < 400:
            try:
                done.append(log.append(actor="olga", action="test.append", object=str(len(done)))["seq"])
            except AuditStoreError:
                unknown.append(len(done))

    writer = threading.Thread(target=write)
    writer.start()
    while len(done) < 50:
        time.sleep(0.05)
    postgres_cluster.restart()
    time.sleep(0.5)
    stop.set()
    writer.join(120)
    assert not writer.is_alive() and len(done) > 50
    entries = log.entries()
    assert len(done) <= len(entries) <= len(done) + len(unknown)
    log.checkpoint()
    assert log.verify().ok


def test_a_wrong_password_or_unreachable_server_is_one_line(postgres_cluster, key):
    wrong = postgres_cluster.url().replace(postgres_cluster.password, "not-the-password")
    with pytest.raises(StoreUnavailable) as caught:
        SqlAuditLog(wrong, signing_key=key)
    message = str(caught.value)
    assert message.startswith("audit log at ") and "password authentication failed" in message
    assert "\n" not in message and "not-the-password" not in message


def test_cli_verifies_the_database_log_and_its_export(tmp_path, postgres_url, capsys):
    from governance.__main__ import main
    config = _shared_workspace(tmp_path, postgres_url)
    gov = GovernanceContext.load(config)
    gov.record_consent(new_record("alice", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="olga"),
                       actor=_operator(0))
    assert main(["--config", config, "audit", "checkpoint"]) == 0
    vkey = str(gov.audit_vkey)
    assert main(["--config", config, "audit", "verify", "--vkey", vkey]) == 0
    assert "audit log intact" in capsys.readouterr().out
    assert main(["--config", config, "audit", "export", "--to", str(tmp_path / "out.jsonl")]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--log", str(tmp_path / "out.jsonl"), "--vkey", vkey]) == 0
    assert "audit log intact: 1 entries" in capsys.readouterr().out
    assert load_private_key(gov.config.audit_key)  # the secret stays in the workspace; the export needs none
