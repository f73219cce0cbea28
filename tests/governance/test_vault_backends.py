"""The vault with its data keys in either store: key files, or the registry's database."""
import multiprocessing
from pathlib import Path

import pytest

from governance import Actor, GovernanceContext, Purpose, new_record
from governance.keys import LocalMasterKey
from governance.vault import KeyShredded
from governance.vault_keys import FileKeyStore, SqlKeyStore

from .conftest import workspace_on

PHOTO = (Path(__file__).resolve().parents[2] / "eval" / "demo" / "faces" / "obama_senate.jpg").read_bytes()
OPERATOR = Actor("olga", "operator")


@pytest.fixture
def gov_on(tmp_path, store_url) -> GovernanceContext:
    gov = workspace_on(tmp_path, store_url)
    gov.registry.add(new_record("alice", list(Purpose), controller="C", jurisdiction="EU", actor="olga"))
    return gov


def test_the_key_store_follows_the_registry(gov_on):
    expected = SqlKeyStore if isinstance(gov_on.config.registry, str) else FileKeyStore
    assert isinstance(gov_on.vault.keys, expected)


def test_put_read_rotate_and_shred_on_either_store(gov_on, tmp_path):
    vault = gov_on.vault
    file_id = vault.put("alice", PHOTO, purpose="evaluation", actor=OPERATOR)
    before = vault.keys.get("alice")
    new_key = LocalMasterKey.generate_file(tmp_path / "new.key")
    assert vault.rotate_master_key(new_key, actor=Actor("ada", "admin")) == 1
    after = vault.keys.get("alice")
    assert after.master_key_id == new_key.key_id != before.master_key_id and after.wrapped_key != before.wrapped_key
    assert vault.read("alice", file_id, purpose="evaluation", actor=OPERATOR) == PHOTO
    vault.withdraw("alice", actor=OPERATOR, reason="asked")
    assert vault.keys.get("alice") is None and vault.keys.tombstone("alice").actor == "olga"
    with pytest.raises(KeyShredded, match="crypto-shredded"):
        vault._data_key("alice", create=False)
    assert gov_on.verify_audit_log().ok


def _first_put(config: str, index: int, results) -> None:
    gov = GovernanceContext.load(config)
    file_id = gov.vault.put("alice", PHOTO + bytes([index]), purpose="evaluation", actor=OPERATOR)
    results.put((index, file_id))


def test_eight_hosts_first_puts_share_one_key_by_a_database_constraint(tmp_path, postgres_url):
    gov = workspace_on(tmp_path, postgres_url)
    gov.registry.add(new_record("alice", list(Purpose), controller="C", jurisdiction="EU", actor="olga"))
    config = str(tmp_path / "gov" / "governance.toml")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_first_put, args=(config, index, results)) for index in range(8)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    assert [process.exitcode for process in workers] == [0] * 8
    stored = dict(results.get(timeout=5) for _ in range(8))
    fresh = GovernanceContext.load(config)
    assert len(list(fresh.vault.keys)) == 1
    assert all(fresh.vault.read("alice", file_id, purpose="evaluation", actor=OPERATOR) == PHOTO + bytes([index])
               for index, file_id in stored.items())
