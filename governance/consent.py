"""Consent records: pydantic models following ISO/IEC TS 27560 field names, W3C DPV terms as values.

A record says who (a pseudonymous PII principal id) agreed with which controller to which purposes,
on which lawful basis, for which data categories, for how long; its events (given, withdrawn,
expired) are its history. ``ConsentRecord.decide(purpose, at)`` is the pure decision; the registry
adds storage.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from enum import Enum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION = "1.0.0"

SubjectId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class Purpose(str, Enum):
    """What a photo may be used for; each maps to its DPV purpose (``DPV_PURPOSE``)."""

    EVALUATION = "evaluation"
    CALIBRATION = "calibration"
    AVATAR_GENERATION = "avatar-generation"
    TRAINING = "training"


DPV_PURPOSE = {
    Purpose.EVALUATION: "dpv:ServiceOptimisation",
    Purpose.CALIBRATION: "dpv:ServiceOptimisation",
    Purpose.AVATAR_GENERATION: "dpv:ServiceProvision",
    Purpose.TRAINING: "dpv:ResearchAndDevelopment",
}


class LawfulBasis(str, Enum):
    CONSENT = "dpv:Consent"
    EXPLICIT_CONSENT = "dpv:ExplicitlyExpressedConsent"
    CONTRACT = "dpv:Contract"
    LEGITIMATE_INTEREST = "dpv:LegitimateInterest"


class DataCategory(str, Enum):
    FACIAL = "pd:Facial"
    PICTURE = "pd:Picture"
    BIOMETRIC = "pd:Biometric"
    NAME = "pd:Name"


class EventType(str, Enum):
    GIVEN = "dpv:ConsentGiven"
    WITHDRAWN = "dpv:ConsentWithdrawn"
    EXPIRED = "dpv:ConsentExpired"


class Refusal(str, Enum):
    """Why the consent gate refused."""

    NO_RECORD = "no record"
    PURPOSE_NOT_GRANTED = "purpose not granted"
    NOT_YET_VALID = "not yet valid"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


class ConsentEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: EventType
    event_time: AwareDatetime
    actor: str = Field(min_length=1)
    reason: str | None = None


class Controller(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    contact: str | None = None


class UsageLimits(BaseModel):
    """What the subject allowed avatars of them to be used for; a field left out sets no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_prompt_categories: list[str] | None = Field(
        default=None, min_length=1, description="Prompt categories (identity, expression, style, scene, ...) "
        "the sampler may generate; the sampler refuses any other before generating.")
    max_released_avatars: int | None = Field(
        default=None, ge=0, description="How many avatars may be released under this record, all releases together.")
    release_permission: dt.timedelta | None = Field(
        default=None, description="How long a released avatar may be used after its release.")
    training_mining_allowed: bool = Field(
        default=False, description="Whether released avatars may be used for AI training and data mining "
        "(their cawg.training-mining assertion says allowed instead of notAllowed).")

    def category_refusal(self, category: str) -> str | None:
        """None when ``category`` may be generated, else the reason it may not."""
        if self.allowed_prompt_categories is None or category in self.allowed_prompt_categories:
            return None
        return (f"prompt category {category!r} not allowed by the consent record "
                f"(allowed: {', '.join(self.allowed_prompt_categories)})")


class ConsentRecord(BaseModel):
    """One consent record (ISO/IEC TS 27560 structure, DPV vocabulary)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    record_id: str = Field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    schema_version: Literal["1.0.0"] = SCHEMA_VERSION
    pii_principal_id: SubjectId
    pii_controller: Controller
    purposes: list[Purpose] = Field(min_length=1, json_schema_extra={
        "x-dpv-purpose": {purpose.value: dpv for purpose, dpv in DPV_PURPOSE.items()}})
    lawful_basis: LawfulBasis = LawfulBasis.CONSENT
    pii_categories: list[DataCategory] = Field(default_factory=lambda: [DataCategory.FACIAL])
    retention: dt.timedelta = Field(description="How long photos are kept after the validity window ends.")
    jurisdiction: str = Field(min_length=2, description="ISO 3166 code, e.g. 'EU', 'FR', 'US-CA'.")
    valid_from: AwareDatetime
    valid_until: AwareDatetime | None = None
    events: list[ConsentEvent] = Field(min_length=1)
    usage_limits: UsageLimits = Field(default_factory=UsageLimits)

    @model_validator(mode="after")
    def _check_history(self) -> "ConsentRecord":
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if self.events[0].event_type is not EventType.GIVEN:
            raise ValueError("events: the first event must be dpv:ConsentGiven")
        for index, (before, after) in enumerate(zip(self.events, self.events[1:]), start=1):
            if after.event_time < before.event_time:
                raise ValueError(f"events[{index}]: event_time is earlier than the event before it")
            if before.event_type is not EventType.GIVEN:
                raise ValueError(f"events[{index}]: no event may follow {before.event_type.value}")
            if after.event_type is EventType.GIVEN:
                raise ValueError(f"events[{index}]: consent is already given")
        return self

    @property
    def subject(self) -> str:
        return self.pii_principal_id

    def ended_by(self, at: dt.datetime) -> ConsentEvent | None:
        """The withdrawal or expiry event in force at ``at``, if any."""
        ending = self.events[-1]
        return ending if ending.event_type is not EventType.GIVEN and ending.event_time <= at else None

    def decide(self, purpose: Purpose, at: dt.datetime) -> Refusal | None:
        """None when ``purpose`` is allowed at ``at``, else the reason it is not."""
        if at.tzinfo is None:
            raise ValueError("at: a timezone-aware datetime is required")
        if purpose not in self.purposes:
            return Refusal.PURPOSE_NOT_GRANTED
        ending = self.ended_by(at)
        if ending is not None:
            return Refusal.WITHDRAWN if ending.event_type is EventType.WITHDRAWN else Refusal.EXPIRED
        if at < self.valid_from or at < self.events[0].event_time:
            return Refusal.NOT_YET_VALID
        if self.valid_until is not None and at >= self.valid_until:
            return Refusal.EXPIRED
        return None

    def with_event(self, event: ConsentEvent) -> "ConsentRecord":
        """A copy with ``event`` appended, validated like any record."""
        return ConsentRecord.model_validate({**self.model_dump(), "events": [*self.events, event]})


def new_record(subject: str, purposes: list[Purpose], *, controller: str, jurisdiction: str,
               actor: str, given_at: dt.datetime | None = None, valid_from: dt.datetime | None = None,
               valid_until: dt.datetime | None = None, retention: dt.timedelta = dt.timedelta(days=30),
               lawful_basis: LawfulBasis = LawfulBasis.CONSENT,
               pii_categories: list[DataCategory] | None = None,
               usage_limits: UsageLimits | None = None) -> ConsentRecord:
    """A record whose consent was given at ``given_at`` (default: now), valid from ``valid_from``
    (default: when given) until ``valid_until`` (default: open-ended)."""
    given_at = given_at or dt.datetime.now(dt.timezone.utc)
    return ConsentRecord(
        pii_principal_id=subject, pii_controller=Controller(name=controller), purposes=purposes,
        lawful_basis=lawful_basis, pii_categories=pii_categories or [DataCategory.FACIAL],
        retention=retention, jurisdiction=jurisdiction, valid_from=valid_from or given_at, valid_until=valid_until,
        events=[ConsentEvent(event_type=EventType.GIVEN, event_time=given_at, actor=actor)],
        usage_limits=usage_limits or UsageLimits())


def json_schema() -> str:
    """The JSON Schema of a consent record."""
    return json.dumps(ConsentRecord.model_json_schema(), indent=2)
