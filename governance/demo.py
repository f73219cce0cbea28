"""A governance workspace for the demo: public figures who did not consent to avatar generation.

Their consent records permit evaluation and calibration only, so the demo also shows the consent
gate refusing to generate avatars of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from governance.consent import DataCategory, LawfulBasis, Purpose, new_record
from governance.context import CONFIG_NAME, GovernanceContext
from governance.roles import Actor, Role

DEMO_PURPOSES = [Purpose.EVALUATION, Purpose.CALIBRATION]
DEMO_ACTOR = "governance.demo"


def create_demo_governance(folder: str | Path, subjects: Iterable[str]) -> GovernanceContext:
    """A workspace in ``folder`` (created, or reused if it holds one) whose ``subjects`` are recorded
    for evaluation and calibration only, on the controller's legitimate interest."""
    folder = Path(folder)
    config = folder / CONFIG_NAME
    gov = GovernanceContext.load(config) if config.exists() else GovernanceContext.init(
        folder, controller="idavatar demo (evaluation only)", jurisdiction="EU")
    admin = Actor(DEMO_ACTOR, Role.ADMIN)
    for subject in subjects:
        if not gov.registry.records_for(subject):
            gov.record_consent(new_record(
                subject, DEMO_PURPOSES, controller=gov.config.controller, jurisdiction=gov.config.jurisdiction,
                actor=DEMO_ACTOR, lawful_basis=LawfulBasis.LEGITIMATE_INTEREST,
                pii_categories=[DataCategory.FACIAL, DataCategory.PICTURE]), actor=admin)
    gov.audit_log.checkpoint()  # the end of a batch: sign the log as it is (also for a workspace made earlier)
    return gov
