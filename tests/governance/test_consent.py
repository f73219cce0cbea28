import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from governance.consent import ConsentEvent, ConsentRecord, EventType, Purpose, Refusal, json_schema, new_record
from governance.registry import ConsentRegistry

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
times = st.integers(min_value=-1000, max_value=1000).map(lambda h: T0 + dt.timedelta(hours=h))


def record(**changes) -> dict:
    base = new_record("alice", [Purpose.AVATAR_GENERATION], controller="Test Avatars Ltd", jurisdiction="EU",
                      actor="olga", given_at=T0).model_dump(mode="json")
    return {**base, **changes}


def test_naive_datetimes_are_rejected_naming_the_field():
    with pytest.raises(ValidationError) as error:
        ConsentRecord.model_validate(record(valid_from="2026-01-01T00:00:00"))
    assert error.value.errors()[0]["loc"] == ("valid_from",)
    assert "timezone" in error.value.errors()[0]["msg"]


def test_unknown_purpose_and_missing_field_are_named():
    with pytest.raises(ValidationError) as error:
        ConsentRecord.model_validate(record(purposes=["marketing"]))
    assert error.value.errors()[0]["loc"] == ("purposes", 0)
    without_jurisdiction = record()
    del without_jurisdiction["jurisdiction"]
    with pytest.raises(ValidationError, match="jurisdiction"):
        ConsentRecord.model_validate(without_jurisdiction)


def test_json_schema_lists_the_27560_fields_and_dpv_values():
    schema = json.loads(json_schema())
    assert {"record_id", "schema_version", "pii_principal_id", "pii_controller", "purposes", "lawful_basis",
            "pii_categories", "retention", "jurisdiction", "valid_from", "valid_until",
            "events"} <= set(schema["properties"])
    rendered = json.dumps(schema)
    assert "dpv:ConsentWithdrawn" in rendered and "dpv:Consent" in rendered and "avatar-generation" in rendered
    assert schema["properties"]["purposes"]["x-dpv-purpose"]["training"] == "dpv:ResearchAndDevelopment"


@settings(max_examples=200, deadline=None)
@given(start=times, length=st.one_of(st.none(), st.integers(1, 500)), at=times)
def test_validity_window(start, length, at):
    end = None if length is None else start + dt.timedelta(hours=length)
    given = {"event_type": "dpv:ConsentGiven", "event_time": start.isoformat(), "actor": "olga"}
    rec = ConsentRecord.model_validate(record(valid_from=start.isoformat(), valid_until=end and end.isoformat(),
                                              events=[given]))
    expected = (Refusal.NOT_YET_VALID if at < start else
                Refusal.EXPIRED if end is not None and at >= end else None)
    assert rec.decide(Purpose.AVATAR_GENERATION, at) == expected
    assert rec.decide(Purpose.TRAINING, at) == Refusal.PURPOSE_NOT_GRANTED


event_types = st.sampled_from(list(EventType))


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.tuples(event_types, times), min_size=1, max_size=4), at=times)
def test_event_ordering(events, at):
    """Valid histories are: given, then at most one later withdrawal or expiry. Anything else is refused."""
    payload = [{"event_type": kind.value, "event_time": time.isoformat(), "actor": "olga"} for kind, time in events]
    kinds = [kind for kind, _ in events]
    well_formed = (kinds[0] is EventType.GIVEN and EventType.GIVEN not in kinds[1:] and len(kinds) <= 2
                   and all(b[1] >= a[1] for a, b in zip(events, events[1:])))
    valid_from = min(time for _, time in events)
    if not well_formed:
        with pytest.raises(ValidationError, match="events"):
            ConsentRecord.model_validate(record(valid_from=valid_from.isoformat(), events=payload))
        return
    rec = ConsentRecord.model_validate(record(valid_from=valid_from.isoformat(), events=payload))
    decision = rec.decide(Purpose.AVATAR_GENERATION, at)
    if len(events) == 2 and at >= events[1][1]:
        assert decision == (Refusal.WITHDRAWN if kinds[1] is EventType.WITHDRAWN else Refusal.EXPIRED)
    elif at < events[0][1]:
        assert decision == Refusal.NOT_YET_VALID
    else:
        assert decision is None


def test_registry_persists_and_gives_every_reason(store_url):
    path = store_url
    registry = ConsentRegistry(path)
    assert registry.check("alice", "avatar-generation", T0).reason == "no record"
    rec = registry.add(new_record("alice", [Purpose.EVALUATION, Purpose.AVATAR_GENERATION], controller="C",
                                  jurisdiction="EU", actor="olga", given_at=T0,
                                  valid_until=T0 + dt.timedelta(days=10)))
    reopened = ConsentRegistry(path)  # a new connection on the same database
    hour = dt.timedelta(hours=1)
    assert reopened.check("alice", "avatar-generation", T0 + hour).allowed
    assert reopened.check("alice", "avatar-generation", T0 + hour).record_id == rec.record_id
    assert reopened.check("alice", "training", T0 + hour).reason == "purpose not granted"
    assert reopened.check("alice", "evaluation", T0 - hour).reason == "not yet valid"
    assert reopened.check("alice", "evaluation", T0 + dt.timedelta(days=11)).reason == "expired"
    reopened.withdraw("alice", actor="olga", reason="asked by email", at=T0 + 2 * hour)
    assert reopened.check("alice", "evaluation", T0 + 3 * hour).reason == "withdrawn"
    assert reopened.check("alice", "evaluation", T0 + hour).allowed  # history is kept, not rewritten
    history = [e.event_type for e in ConsentRegistry(path).get(rec.record_id).events]
    assert history == [EventType.GIVEN, EventType.WITHDRAWN]
    with pytest.raises(ValueError, match="timezone"):
        reopened.check("alice", "evaluation", dt.datetime(2026, 1, 1))


def test_expired_event_and_refusal_priority(store_url):
    registry = ConsentRegistry(store_url)
    old = registry.add(new_record("bob", [Purpose.AVATAR_GENERATION], controller="C", jurisdiction="EU",
                                  actor="olga", given_at=T0))
    registry.add(new_record("bob", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="olga", given_at=T0))
    registry.add_event(old.record_id, ConsentEvent(event_type=EventType.EXPIRED,
                                                   event_time=T0 + dt.timedelta(days=1), actor="retention-job"))
    decision = registry.check("bob", Purpose.AVATAR_GENERATION, T0 + dt.timedelta(days=2))
    # The record that granted the purpose explains the refusal better than the one that never did.
    assert (decision.allowed, decision.reason, decision.record_id) == (False, "expired", old.record_id)
    with pytest.raises(ValidationError, match="no event may follow"):
        registry.add_event(old.record_id, ConsentEvent(event_type=EventType.WITHDRAWN,
                                                       event_time=T0 + dt.timedelta(days=3), actor="olga"))


def test_cli_consent_commands(gov, capsys):
    from governance.__main__ import main
    config = ["--config", str(gov.config.audit_log.parents[1] / "governance.toml")]
    assert main([*config, "consent", "give", "--subject", "dora", "--purpose", "evaluation",
                 "--valid-until", "2999-01-01T00:00:00+00:00"]) == 0
    record_id = capsys.readouterr().out.strip()
    assert record_id.startswith("urn:uuid:")
    assert main([*config, "consent", "check", "--subject", "dora", "--purpose", "evaluation"]) == 0
    assert main([*config, "consent", "check", "--subject", "dora", "--purpose", "training"]) == 1
    assert "refused: purpose not granted" in capsys.readouterr().out
    assert main([*config, "consent", "status", "--subject", "dora", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluation"] == {"allowed": True, "reason": "allowed",
                                                                 "record_id": record_id}
    assert main([*config, "consent", "show", record_id]) == 0
    assert ConsentRecord.model_validate_json(capsys.readouterr().out).record_id == record_id
    assert main([*config, "--role", "auditor", "consent", "give", "--subject", "eve", "--purpose", "training"]) == 2
    assert "role 'auditor' lacks permission 'record'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*config, "consent", "check", "--subject", "dora", "--purpose", "evaluation", "--at", "2026-01-01T00:00"])
    assert "give a timezone" in capsys.readouterr().err


def test_consent_given_now_for_a_later_window_can_be_withdrawn_before_it_opens(store_url):
    registry = ConsentRegistry(store_url)
    now = dt.datetime.now(UTC)
    registry.add(new_record("erin", [Purpose.AVATAR_GENERATION], controller="C", jurisdiction="EU", actor="olga",
                            valid_from=now + dt.timedelta(days=7)))
    assert registry.check("erin", "avatar-generation").reason == "not yet valid"
    assert len(registry.withdraw("erin", actor="olga")) == 1
    assert registry.check("erin", "avatar-generation", now + dt.timedelta(days=8)).reason == "withdrawn"
