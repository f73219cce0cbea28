"""Releases running at once, in separate processes, still honour a consent record's release count."""
import json
from pathlib import Path

import pytest

from governance import GovernanceContext, Purpose, new_record
from governance.consent import UsageLimits
from governance.release import release

from .test_release import RELEASER, decide, make_run

RELEASES = 3
LIMIT = 2


def _release_into(config: str, run: str, to: str, out: str) -> None:
    result = release(run, to, GovernanceContext.load(config), actor=RELEASER)
    Path(out).write_text(json.dumps(len(result.items)))


@pytest.fixture(params=["file", "postgresql"])
def audit_log_at(request) -> str | None:
    """Where the workspace keeps its audit log: the default file, or a database on a real PostgreSQL server."""
    return None if request.param == "file" else request.getfixturevalue("postgres_url")


def test_releases_at_once_never_exceed_the_consent_records_count(tmp_path, audit_log_at, in_processes):
    GovernanceContext.init(tmp_path / "gov", controller="Test Avatars Ltd")
    config = tmp_path / "gov" / "governance.toml"
    if audit_log_at:
        config.write_text(config.read_text().replace('audit_log = "audit/audit.jsonl"', f'audit_log = "{audit_log_at}"'))
    gov = GovernanceContext.load(config)
    record = gov.registry.add(new_record("alice", list(Purpose), controller="c", jurisdiction="EU", actor="o",
                                         usage_limits=UsageLimits(max_released_avatars=LIMIT)))
    for index in range(RELEASES):  # each release has one approved image of its own, all under alice's record
        image, = make_run(tmp_path / f"run{index}", gov, record, count=1)
        decide(gov, image, "approve")

    outs = [tmp_path / f"released{index}.json" for index in range(RELEASES)]
    arguments = [(str(config), str(tmp_path / f"run{index}"), str(tmp_path / f"rel{index}"), str(outs[index]))
                 for index in range(RELEASES)]
    assert in_processes(_release_into, arguments) == [0] * RELEASES

    released = [json.loads(out.read_text()) for out in outs]
    assert sum(released) == LIMIT, released
    logged = [entry for entry in GovernanceContext.load(config).audit_log.entries() if entry["action"] == "release"]
    assert sum(len(entry["details"]["items"]) for entry in logged) == LIMIT
    assert sum((tmp_path / f"rel{index}").is_dir() for index in range(RELEASES)) == LIMIT
