"""Usage limits in a consent record: in its JSON Schema, kept by the registry, enforced by the sampler."""

import datetime as dt
import json
import sqlite3

import pytest
from pydantic import ValidationError

from governance import Purpose, new_record
from governance.__main__ import main as governance_cli
from governance.consent import ConsentRecord, UsageLimits, json_schema


def test_limits_are_in_the_json_schema_and_default_to_none():
    schema = json.loads(json_schema())
    assert schema["properties"]["usage_limits"]
    limits = schema["$defs"]["UsageLimits"]["properties"]
    assert set(limits) == {"allowed_prompt_categories", "max_released_avatars", "release_permission",
                           "training_mining_allowed"}
    assert all(limits[name].get("description") for name in limits)
    assert UsageLimits().category_refusal("anything") is None


def test_limits_are_validated():
    with pytest.raises(ValidationError, match="max_released_avatars"):
        UsageLimits(max_released_avatars=-1)
    with pytest.raises(ValidationError, match="allowed_prompt_categories"):
        UsageLimits(allowed_prompt_categories=[])
    with pytest.raises(ValidationError, match="extra"):
        UsageLimits(max_avatars=3)


def test_registry_keeps_limits_and_reads_records_stored_before_them(gov):
    limits = UsageLimits(allowed_prompt_categories=["identity", "expression"], max_released_avatars=5,
                         release_permission=dt.timedelta(days=90))
    record = gov.registry.add(new_record("alice", [Purpose.AVATAR_GENERATION], controller="c", jurisdiction="EU",
                                         actor="o", usage_limits=limits))
    assert gov.registry.get(record.record_id).usage_limits == limits
    old = new_record("bob", [Purpose.EVALUATION], controller="c", jurisdiction="EU", actor="o")
    body = json.loads(old.model_dump_json(exclude={"events"}))
    del body["usage_limits"]
    with sqlite3.connect(gov.registry.location) as db:  # as a record written before limits existed
        db.execute("INSERT INTO records VALUES (?, ?, ?)", (old.record_id, "bob", json.dumps(body)))
        db.execute("INSERT INTO events VALUES (?, 0, ?)", (old.record_id, old.events[0].model_dump_json()))
    assert gov.registry.get(old.record_id).usage_limits == UsageLimits()


def test_consent_give_records_the_limits(gov, capsys):
    config = str(gov.config.audit_log.parents[1] / "governance.toml")
    assert governance_cli(["--config", config, "consent", "give", "--subject", "carol", "--purpose",
                           "avatar-generation", "--allowed-category", "identity", "--allowed-category", "style",
                           "--max-released", "3", "--release-permission-days", "30"]) == 0
    record: ConsentRecord = gov.registry.get(capsys.readouterr().out.strip())
    assert record.usage_limits == UsageLimits(allowed_prompt_categories=["identity", "style"], max_released_avatars=3,
                                              release_permission=dt.timedelta(days=30))


@pytest.fixture
def limited(gov):
    return gov.registry.add(new_record("alice", list(Purpose), controller="c", jurisdiction="EU", actor="o",
                                       usage_limits=UsageLimits(allowed_prompt_categories=["identity"])))


def sample(gov, tmp_path, category: str) -> int:
    from idadapter.sample import main as sampler

    return sampler(["--base", str(tmp_path / "no-base"), "--adapter", str(tmp_path / "no-adapter"),
                    "--photo", str(tmp_path / "no-photo.jpg"), "--subject", "alice", "--prompt", "a photo",
                    "--category", category, "--out", str(tmp_path / "out"),
                    "--governance", str(gov.config.audit_log.parents[1] / "governance.toml")])


def test_sampler_refuses_a_category_the_record_does_not_allow_before_anything_is_read(gov, limited, tmp_path, capsys):
    assert sample(gov, tmp_path, "scene") == 3
    assert "refused — prompt category 'scene' not allowed by the consent record (allowed: identity)" in \
        capsys.readouterr().err
    entry = list(gov.audit_log.entries())[-1]
    assert (entry["action"], entry["outcome"], entry["object"]) == ("consent.usage-check", "refused", limited.record_id)
    assert entry["details"]["prompt_category"] == "scene"
    assert not (tmp_path / "out").exists()


def test_sampler_goes_on_with_an_allowed_category(gov, limited, tmp_path, capsys):
    assert sample(gov, tmp_path, "identity") == 2  # past the check: the (missing) photo is read next
    assert "cannot read the photo" in capsys.readouterr().err
    checks = [e for e in gov.audit_log.entries() if e["action"] == "consent.usage-check"]
    assert [(e["outcome"], e["details"]["reason"]) for e in checks] == [("ok", "allowed")]
