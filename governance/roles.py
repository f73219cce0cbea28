"""Roles and the permission table. A refused action names the role and the permission it lacked.

Verifying (the audit log, provenance, a compliance audit) needs no permission: it uses only public
material (trust anchors, the log's public key), so any role, or an outsider, may do it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Role(str, Enum):
    OPERATOR = "operator"
    REVIEWER = "reviewer"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Permission(str, Enum):
    RECORD = "record"      # record consent given
    PUT = "put"            # store a photo in the vault
    READ = "read"          # decrypt a photo (still through the consent gate)
    SIGN = "sign"          # sign a generated image
    WITHDRAW = "withdraw"  # withdraw consent and crypto-shred the subject's key
    ROTATE = "rotate"      # rotate the vault master key


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OPERATOR: frozenset({Permission.RECORD, Permission.PUT, Permission.READ, Permission.SIGN,
                              Permission.WITHDRAW}),
    Role.REVIEWER: frozenset({Permission.READ}),
    Role.AUDITOR: frozenset(),
    Role.ADMIN: frozenset(Permission),
}


class PermissionDenied(PermissionError):
    pass


@dataclass(frozen=True)
class Actor:
    """Who acts, in which role. The name is what the audit log records."""

    name: str
    role: Role

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))
        if not self.name:
            raise ValueError("actor name must not be empty")

    def require(self, permission: Permission) -> None:
        if permission not in PERMISSIONS[self.role]:
            raise PermissionDenied(
                f"actor {self.name!r}: role {self.role.value!r} lacks permission {permission.value!r}")

    def __str__(self) -> str:
        return f"{self.name} ({self.role.value})"


def permission_table() -> str:
    """The table as Markdown (used in the docs)."""
    header = "| permission | " + " | ".join(role.value for role in Role) + " |"
    rule = "|---" * (len(Role) + 1) + "|"
    rows = [f"| {p.value} | " + " | ".join("yes" if p in PERMISSIONS[r] else "-" for r in Role) + " |"
            for p in Permission]
    return "\n".join([header, rule, *rows])
