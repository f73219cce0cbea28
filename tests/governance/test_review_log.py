import pytest

from governance.review_log import APPROVE, DECISION, RATING, REJECT, latest_decisions, log_review_action


def test_latest_decision_per_image_follows_log_order(gov):
    log = gov.audit_log
    image = "sha256:" + "ab" * 32
    log_review_action(log, action=RATING, actor="rita", role="reviewer", image_sha256=image, subject="alice",
                      details={"likeness": 5})
    first = log_review_action(log, action=DECISION, actor="alan", role="approver", image_sha256=image,
                              subject="alice", details={"decision": APPROVE, "run": "r1", "line": 3})
    decisions = latest_decisions(log.entries())
    assert decisions[image].approved and decisions[image].seq == first["seq"] and decisions[image].line == 3
    log_review_action(log, action=DECISION, actor="alan", role="approver", image_sha256=image, subject="alice",
                      details={"decision": REJECT, "reason": "artefacts on the left eye"})
    latest = latest_decisions(log.entries())[image]
    assert not latest.approved and latest.reason == "artefacts on the left eye"
    assert latest.entry_hash.startswith("sha256:") and gov.verify_audit_log().ok


def test_malformed_decisions_are_refused_before_logging(gov):
    log = gov.audit_log
    with pytest.raises(ValueError, match="needs a reason"):
        log_review_action(log, action=DECISION, actor="a", role="approver", image_sha256="sha256:00",
                          subject=None, details={"decision": REJECT})
    with pytest.raises(ValueError, match="must be"):
        log_review_action(log, action="review.like", actor="a", role="approver", image_sha256="sha256:00",
                          subject=None, details={})
    assert log.entries() == []


def test_audit_verify_lists_every_review_action(gov, capsys):
    from governance.__main__ import main
    image = "sha256:" + "cd" * 32
    log_review_action(gov.audit_log, action=RATING, actor="rita", role="reviewer", image_sha256=image,
                      subject="alice", details={"likeness": 4})
    log_review_action(gov.audit_log, action=DECISION, actor="alan", role="approver", image_sha256=image,
                      subject="alice", details={"decision": REJECT, "reason": "blurred"})
    gov.audit_log.checkpoint()
    config = str(gov.config.audit_log.parents[1] / "governance.toml")
    assert main(["--config", config, "audit", "verify", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("audit log intact: 2 entries")
    assert any("rita (reviewer) review.rating ok subject=alice" in line and "likeness=4" in line for line in lines)
    assert any("alan (approver) review.decision ok" in line and "reason=blurred" in line for line in lines)
