"""docs/governance.md "Shared stores on PostgreSQL", the review-app part, run for real: one PostgreSQL
database holds the consent registry, the audit log and the review store; the sampler's signed outputs
are reviewed in the real app (`python -m eval.review serve`); `audit verify` passes on the database
and on its `audit export`."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from eval.review.store import ReviewStore
from governance import GovernanceContext
from governance.__main__ import main as governance
from tests.review.conftest import PASSWORD, build_signed_run
from tests.review.servers import review_server


def one_database_workspace(folder, url: str):
    """`python -m governance init`, then registry, audit_log and review_store pointed at ``url``."""
    assert governance(["init", str(folder)]) == 0
    config = folder / "governance.toml"
    text = config.read_text().replace('registry = "consent.sqlite"', f'registry = "{url}"')
    text = text.replace('audit_log = "audit/audit.jsonl"', f'audit_log = "{url}"')
    config.write_text(text + f'review_store = "{url}"\n')
    return config


@pytest.mark.slow
def test_review_app_and_audit_on_one_postgres_database(tmp_path, postgres_url, capsys):
    config = one_database_workspace(tmp_path / "gov", postgres_url)
    manifest, gov = build_signed_run(tmp_path, GovernanceContext.load(config))
    subprocess.run([sys.executable, "-m", "eval.review", "user", "add", "alan", "--role", "approver",
                    "--password-stdin", "--workspace", str(config)], input=PASSWORD + "\n", text=True, check=True)
    with review_server("serve", str(manifest), "--workspace", str(config)) as server:
        token = httpx.post(f"{server.url}/api/v1/token", json={"name": "alan", "password": PASSWORD}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        task = httpx.get(f"{server.url}/api/v1/ratings/next", headers=headers).json()
        rated = httpx.post(f"{server.url}/api/v1/ratings", headers=headers, json={
            "token": task["token"], "line": task["item"]["line"], "likeness": 4, "prompt_fidelity": 3, "quality": 4})
        assert rated.status_code == 201, rated.text
        view = httpx.get(f"{server.url}/api/v1/items/1", headers=headers).json()
        decided = httpx.post(f"{server.url}/api/v1/decisions", headers=headers,
                             json={"token": view["token"], "line": 1, "decision": "approve"})
        assert decided.status_code in (200, 201), decided.text
    assert not (tmp_path / "gov" / "review.sqlite").exists() and not (tmp_path / "gov" / "consent.sqlite").exists()
    store = ReviewStore(postgres_url)
    assert (store.count("rating"), store.count("decision"), store.unaudited()) == (1, 1, [])
    store.close()
    actions = [entry["action"] for entry in gov.audit_log.entries()]
    assert actions.count("provenance.sign") == 4 and actions[-2:] == ["review.rating", "review.decision"]

    vkey = str(gov.audit_vkey)
    assert governance(["--config", str(config), "audit", "checkpoint"]) == 0
    assert governance(["--config", str(config), "audit", "verify", "--vkey", vkey]) == 0
    assert "audit log intact" in capsys.readouterr().out
    export = tmp_path / "audit-export.jsonl"
    assert governance(["--config", str(config), "audit", "export", "--to", str(export)]) == 0
    capsys.readouterr()
    assert governance(["audit", "verify", "--log", str(export), "--vkey", vkey]) == 0
    assert f"audit log intact: {len(actions)} entries" in capsys.readouterr().out
