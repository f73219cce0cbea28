"""Governance: consent records, encrypted photo vault, tamper-evident audit log, C2PA provenance.

Start from ``GovernanceContext`` (see docs/governance.md, "API for other parts").
"""

from governance.audit_log import AuditLog, AuditVerification
from governance.compliance import ComplianceReport
from governance.consent import ConsentRecord, Purpose, new_record
from governance.context import GovernanceConfig, GovernanceContext
from governance.provenance import ProvenanceResult
from governance.registry import ConsentDecision, ConsentRefused, ConsentRegistry
from governance.roles import Actor, PermissionDenied, Role

__all__ = [
    "Actor", "AuditLog", "AuditVerification", "ComplianceReport", "ConsentDecision", "ConsentRecord",
    "ConsentRefused", "ConsentRegistry", "GovernanceConfig", "GovernanceContext", "PermissionDenied",
    "ProvenanceResult", "Purpose", "Role", "new_record",
]
