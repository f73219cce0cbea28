"""The server is killed between its two writes (the store row, then the audit entry); the next start
reconciles: the row gets its entry, the log verifies, nothing is lost or written twice.

How the kill lands exactly there: the test holds the audit log's own exclusive lock (flock, as the
log's appenders do), so the server commits the row and then blocks in its audit append; the test sees
the committed row with no audit seq, SIGKILLs the server, releases the lock and starts it again."""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time

import httpx
import pytest

from eval.review.store import ReviewStore
from tests.review.conftest import PASSWORD
from tests.review.servers import review_server


def _wait_for(check, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := check()):
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def _unaudited_decisions(database) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT decision_id, line FROM review_decisions WHERE audit_seq IS NULL").fetchall()


@pytest.mark.slow
def test_a_decision_cut_off_from_its_audit_entry_is_reconciled_at_start_up(signed_run, password_hash, tmp_path):
    database = tmp_path / "review.sqlite"
    store = ReviewStore(f"sqlite:///{database}")
    store.add_account("alan", "approver", password_hash)
    store.close()
    workspace = signed_run.gov.config.registry.parent / "governance.toml"
    args = ("serve", str(signed_run.run.scores_dir), "--workspace", str(workspace), "--database", f"sqlite:///{database}")
    log = signed_run.gov.audit_log
    with review_server(*args) as server:
        token = httpx.post(f"{server.url}/api/v1/token", json={"name": "alan", "password": PASSWORD}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        view = httpx.get(f"{server.url}/api/v1/items/1", headers=headers).json()
        entries_before = len(log.entries())
        fd = os.open(log.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            request = threading.Thread(target=lambda: _post_ignoring_the_crash(
                f"{server.url}/api/v1/decisions", headers, {"token": view["token"], "line": 1, "decision": "approve"}))
            request.start()
            [(decision_id, line)] = _wait_for(lambda: _unaudited_decisions(database))
            server.kill()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        request.join(timeout=30)
    assert line == 1 and len(log.entries()) == entries_before  # the row is there, its entry is not

    with review_server(*args) as restarted:
        assert any(decision_id in line for line in restarted.printed("reconciled"))
    assert _unaudited_decisions(database) == []
    entries = log.entries()
    assert len(entries) == entries_before + 1
    entry = entries[-1]
    assert (entry["action"], entry["actor"], entry["details"]["review_id"], entry["details"]["reconciled"]) == (
        "review.decision", "alan", decision_id, True)
    assert entry["object"] == signed_run.catalog.items[1].sha256 and entry["details"]["decision"] == "approve"
    assert signed_run.gov.verify_audit_log().ok
    store = ReviewStore(f"sqlite:///{database}")
    assert store.export_frames()["decisions"]["audit_seq"].tolist() == [entry["seq"]]
    store.close()


def _post_ignoring_the_crash(url: str, headers: dict, body: dict) -> None:
    try:
        httpx.post(url, headers=headers, json=body, timeout=60)
    except httpx.TransportError:
        pass  # the server was killed mid-request: that is the point
