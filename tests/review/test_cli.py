"""`python -m eval.review user add|list|disable` on a real workspace, and the errors of the CLI."""
from __future__ import annotations

import io
import sys

import pytest

from eval.review.__main__ import main
from eval.review.auth import verify_password
from eval.review.store import ReviewStore
from governance import GovernanceContext


@pytest.fixture
def workspace(tmp_path):
    GovernanceContext.init(tmp_path / "gov")
    return tmp_path / "gov" / "governance.toml"


def test_user_add_list_disable(workspace, capsys, monkeypatch):
    assert main(["user", "add", "rita", "--role", "reviewer", "--workspace", str(workspace)]) == 0
    generated = capsys.readouterr().out.strip().rsplit("one-time password: ", 1)[1]
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret words\n"))
    assert main(["user", "add", "alan", "--role", "approver", "--password-stdin", "--workspace", str(workspace)]) == 0
    assert "password" not in capsys.readouterr().out
    store = ReviewStore(f"sqlite:///{workspace.parent / 'review.sqlite'}")
    assert verify_password(store.account("rita").password_hash, generated)
    assert verify_password(store.account("alan").password_hash, "s3cret words")
    assert store.account("alan").password_hash.startswith("$argon2id$")
    assert main(["user", "disable", "rita", "--workspace", str(workspace)]) == 0
    capsys.readouterr()
    assert main(["user", "list", "--workspace", str(workspace)]) == 0
    assert capsys.readouterr().out.splitlines() == ["alan\tapprover\tactive", "rita\treviewer\tdisabled"]
    store.close()


def test_user_errors_are_one_line_and_exit_2(workspace, tmp_path, capsys, monkeypatch):
    assert main(["user", "add", "rita", "--role", "reviewer", "--workspace", str(workspace)]) == 0
    assert main(["user", "add", "rita", "--role", "reviewer", "--workspace", str(workspace)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["user", "add", " bad\tname", "--role", "reviewer", "--workspace", str(workspace)]) == 2
    assert main(["user", "disable", "nobody", "--workspace", str(workspace)]) == 2
    assert "no account named 'nobody'" in capsys.readouterr().err
    monkeypatch.setenv("GOVERNANCE_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["user", "list"]) == 2
    assert "no governance workspace" in capsys.readouterr().err


def test_serve_without_a_workspace_or_run_is_a_clear_error(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GOVERNANCE_CONFIG", raising=False)
    assert main(["serve", "run/manifest.jsonl"]) == 2
    assert "needs one for its audit log" in capsys.readouterr().err
    assert main(["serve", "nowhere/manifest.jsonl", "--workspace", str(workspace)]) == 2
    assert "nowhere/manifest.jsonl: no such manifest" in capsys.readouterr().err


def test_actions_verifies_the_log_and_lists_each_review_action(workspace, capsys):
    from eval.review.recorder import Recorder
    from eval.review.store import Decision

    gov = GovernanceContext.load(workspace)
    store = ReviewStore(f"sqlite:///{workspace.parent / 'review.sqlite'}")
    store.add_account("alan", "approver", "unused")
    recorder = Recorder(store, gov.audit_log)
    recorder.record(Decision(run_id="out", line=2, image_sha256="sha256:" + "ab" * 32, system="s", subject="tester",
                             approver="alan", decision="reject", reason="noise, not a face", time_spent_s=1.0),
                    "approver")
    recorder.seal()
    store.close()
    assert main(["actions", "--workspace", str(workspace)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("audit log intact: 1 entries")
    assert "alan (approver) review.decision ok subject=tester object=sha256:abab" in out[-1]
    assert "reason=noise, not a face" in out[-1]


def test_the_demo_refuses_a_workspace_that_is_not_a_demo_one(workspace, capsys):
    assert main(["demo", "--workspace", str(workspace)]) == 2
    assert "not a demo workspace" in capsys.readouterr().err
    assert GovernanceContext.load(workspace).registry.records_for("obama") == []
