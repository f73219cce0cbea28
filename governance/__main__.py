"""Command line: ``python -m governance [--config FILE] [--actor NAME --role ROLE] COMMAND ...``.

Exit status: 0 success, 1 a check failed (consent refused, log or images not intact), 2 an error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from governance.audit_log import AuditLog, load_public_key
from governance.consent import LawfulBasis, Purpose, UsageLimits, json_schema, new_record
from governance.context import CONFIG_ENV, GovernanceContext
from governance.demo import create_demo_governance
from governance.keys import LocalMasterKey, WrongMasterKey
from governance.pki import NOT_FOR_PRODUCTION, init_test_pki
from governance.provenance import ProvenanceVerifier
from governance.registry import ConsentRefused, UnknownRecord
from governance.release import release
from governance.release_check import trace_watermark
from governance.roles import Actor, Permission, PermissionDenied, Role
from governance.vault import VaultError

EXPECTED_ERRORS = (ConsentRefused, PermissionDenied, VaultError, WrongMasterKey, UnknownRecord, ValidationError,
                   FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, KeyError)


def _time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a timezone (e.g. 2026-01-01T00:00:00+00:00)")
    return value


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers without a passwd entry
        return "unknown"


def _gov(args) -> GovernanceContext:
    return GovernanceContext.load(args.config)


def _actor(args, permission: Permission | None = None) -> Actor:
    """The acting user; with ``permission``, checked up front (library calls check their own)."""
    actor = Actor(args.actor, args.role)
    if permission is not None:
        actor.require(permission)
    return actor


# -- commands -------------------------------------------------------------------------------------

def cmd_init(args) -> int:
    gov = GovernanceContext.init(args.directory, controller=args.controller, jurisdiction=args.jurisdiction)
    print(f"governance workspace created: {Path(args.directory) / 'governance.toml'}")
    print(f"signing certificate: {gov.config.signing_cert} ({NOT_FOR_PRODUCTION})")
    return 0


def cmd_pki_init(args) -> int:
    pki = init_test_pki(args.directory)
    print(f"{NOT_FOR_PRODUCTION}\ntrust anchor: {pki.root_cert}\nsigning certificate: {pki.signing_cert}\n"
          f"signing key: {pki.signing_key}")
    return 0


def cmd_demo_init(args) -> int:
    gov = create_demo_governance(args.directory, args.subjects)
    gov.audit_log.checkpoint()
    print(f"demo workspace {Path(args.directory) / 'governance.toml'}: {', '.join(args.subjects)} "
          "recorded for evaluation and calibration only")
    return 0


def cmd_consent_give(args) -> int:
    gov = _gov(args)
    actor = _actor(args)
    record = gov.record_consent(new_record(
        args.subject, [Purpose(p) for p in args.purpose], controller=gov.config.controller,
        jurisdiction=args.jurisdiction or gov.config.jurisdiction, actor=actor.name, valid_from=args.valid_from,
        valid_until=args.valid_until, retention=dt.timedelta(days=args.retention_days),
        lawful_basis=LawfulBasis(args.lawful_basis), usage_limits=UsageLimits(
            allowed_prompt_categories=args.allowed_category, max_released_avatars=args.max_released,
            release_permission=dt.timedelta(days=args.release_permission_days)
            if args.release_permission_days is not None else None,
            training_mining_allowed=args.allow_training_mining)), actor=actor)
    gov.audit_log.checkpoint()
    print(record.record_id)
    return 0


def cmd_consent_withdraw(args) -> int:
    gov = _gov(args)
    withdrawn = gov.vault.withdraw(args.subject, actor=_actor(args), reason=args.reason)
    gov.audit_log.checkpoint()
    print(f"withdrawn: {', '.join(withdrawn) or 'no record in force'}; {args.subject}'s data key crypto-shredded")
    return 0


def cmd_consent_check(args) -> int:
    decision = _gov(args).registry.check(args.subject, args.purpose, args.at)
    print(decision)
    return 0 if decision.allowed else 1


def cmd_consent_status(args) -> int:
    status = _gov(args).consent_status(args.subject)
    if args.json:
        print(json.dumps({purpose: {"allowed": d.allowed, "reason": d.reason, "record_id": d.record_id}
                          for purpose, d in status.items()}, indent=2))
    else:
        for decision in status.values():
            print(decision)
    return 0


def cmd_consent_show(args) -> int:
    print(_gov(args).registry.get(args.record_id).model_dump_json(indent=2))
    return 0


def cmd_consent_schema(args) -> int:
    print(json_schema())
    return 0


def cmd_vault_put(args) -> int:
    gov = _gov(args)
    file_id = gov.vault.put(args.subject, Path(args.file).read_bytes(), purpose=args.purpose,
                            actor=_actor(args))
    gov.audit_log.checkpoint()
    print(file_id)
    return 0


def cmd_vault_read(args) -> int:
    gov = _gov(args)
    photo = gov.vault.read(args.subject, args.file_id, purpose=args.purpose, actor=_actor(args))
    gov.audit_log.checkpoint()
    Path(args.out).write_bytes(photo)
    print(f"{args.out}: {len(photo)} bytes")
    return 0


def cmd_vault_list(args) -> int:
    print("\n".join(_gov(args).vault.list(args.subject)))
    return 0


def cmd_vault_rotate(args) -> int:
    actor = _actor(args, Permission.ROTATE)  # before any new key is made
    gov = _gov(args)
    if gov.config.master_key is None:
        raise ValueError("the master key comes from the environment: rotate it with the library "
                         "(PhotoVault.rotate_master_key) and update the variable")
    key_path = gov.config.master_key
    # The new key is kept beside the old one until every data key is re-wrapped, so an
    # interrupted rotation can be rerun.
    pending = key_path.with_name(key_path.name + ".new")
    new_key = LocalMasterKey.from_file(pending) if pending.exists() else LocalMasterKey.generate_file(pending)
    count = gov.vault.rotate_master_key(new_key, actor=actor)
    os.replace(pending, key_path)
    gov.audit_log.checkpoint()
    print(f"re-wrapped {count} data keys under master key {new_key.key_id}; photos untouched")
    return 0


def cmd_vault_backup(args) -> int:
    print(f"encrypted blobs (no keys) copied to {_gov(args).vault.backup(args.destination)}")
    return 0


def cmd_audit_verify(args) -> int:
    """Without --log, the configured log; --log alone takes the configured key, --public-key needs no config."""
    _actor(args, Permission.VERIFY)
    if args.log is None:
        log = _gov(args).audit_log
    else:
        key = args.public_key or _gov(args).config.audit_public_key
        log = AuditLog(args.log, public_key=load_public_key(key))
    result = log.verify()
    print(result)
    return 0 if result.ok else 1


def cmd_audit_checkpoint(args) -> int:
    print(f"checkpoint written: {_gov(args).audit_log.checkpoint()}")
    return 0


def cmd_provenance_sign(args) -> int:
    gov = _gov(args)
    signed = gov.sign_output(args.image, dest=args.out, subject=args.subject, consent_record_id=args.consent_record,
                             generator=args.generator, model_version=args.model_version,
                             actor=_actor(args))
    gov.audit_log.checkpoint()
    print(f"signed: {signed}")
    return 0


def cmd_provenance_verify(args) -> int:
    _actor(args, Permission.VERIFY)
    gov = None if args.trust_anchor else _gov(args)
    if gov is None:  # explicit anchors, maybe no workspace: watermarks are looked up only with one
        lookup = None
    else:
        entries = list(gov.audit_log.entries())
        lookup = lambda path: trace_watermark(path, entries)  # noqa: E731
    anchors = args.trust_anchor or gov.config.trust_anchors
    results = ProvenanceVerifier(anchors, watermark_lookup=lookup).verify_many(args.images)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            status = f"{r.status}, {r.watermark}" if r.watermark else r.status
            print(f"{r.path}: {status}  consent record: {r.consent_record_id or '-'}  ({r.detail})")
    return 0 if all(r.trusted for r in results) else 1


def cmd_audit_dir(args) -> int:
    _actor(args, Permission.VERIFY)
    report = _gov(args).audit_dir(args.directory)
    if args.json == "-":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
        if args.json:
            Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0 if report.ok else 1


def cmd_release(args) -> int:
    result = release(args.run_dir, args.to, _gov(args), actor=_actor(args))
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0 if args.allow_partial and result.items or not result.left_behind else 1


# -- parser ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m governance",
        description="Consent records, encrypted photo vault, tamper-evident audit log, C2PA provenance.",
        epilog="Exit status: 0 success, 1 a check failed, 2 an error.")
    parser.add_argument("--config", help=f"governance.toml (default ${CONFIG_ENV}, else ./governance.toml)")
    parser.add_argument("--actor", default=os.environ.get("GOVERNANCE_ACTOR") or _login(),
                        help="who acts (recorded in the audit log; default $GOVERNANCE_ACTOR or the login)")
    parser.add_argument("--role", default=os.environ.get("GOVERNANCE_ROLE", "operator"),
                        choices=[r.value for r in Role], help="default $GOVERNANCE_ROLE or operator")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(group, name, handler, help):
        sub = group.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    sub = command(commands, "init", cmd_init, "create a workspace: config, master key, audit key, test PKI")
    sub.add_argument("directory")
    sub.add_argument("--controller", default="idavatar operator")
    sub.add_argument("--jurisdiction", default="EU")
    sub = command(commands, "demo-init", cmd_demo_init,
                  "workspace whose subjects are recorded for evaluation and calibration only")
    sub.add_argument("directory")
    sub.add_argument("subjects", nargs="+")

    pki = commands.add_parser("pki", help="local test PKI").add_subparsers(dest="pki_command", required=True)
    command(pki, "init", cmd_pki_init, f"make a test root + signing certificate ({NOT_FOR_PRODUCTION})") \
        .add_argument("directory")

    consent = commands.add_parser("consent", help="consent records").add_subparsers(dest="sub", required=True)
    purposes = [p.value for p in Purpose]
    sub = command(consent, "give", cmd_consent_give, "record consent given; prints the record id")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--purpose", action="append", required=True, choices=purposes)
    sub.add_argument("--valid-from", type=_time, help="default now")
    sub.add_argument("--valid-until", type=_time)
    sub.add_argument("--retention-days", type=int, default=30)
    sub.add_argument("--lawful-basis", default=LawfulBasis.CONSENT.value, choices=[b.value for b in LawfulBasis])
    sub.add_argument("--jurisdiction")
    sub.add_argument("--allowed-category", action="append", metavar="CATEGORY",
                     help="a prompt category the sampler may generate (repeat; default: any)")
    sub.add_argument("--max-released", type=int, metavar="N", help="at most N released avatars (default: no limit)")
    sub.add_argument("--release-permission-days", type=int, metavar="DAYS",
                     help="how long a released avatar may be used (default: no expiry)")
    sub.add_argument("--allow-training-mining", action="store_true",
                     help="released avatars may be used for AI training and data mining (default: notAllowed)")
    sub = command(consent, "withdraw", cmd_consent_withdraw, "withdraw consent and crypto-shred the subject's key")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--reason")
    sub = command(consent, "check", cmd_consent_check, "the consent gate; exit 1 when refused")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--purpose", required=True, choices=purposes)
    sub.add_argument("--at", type=_time, help="default now")
    sub = command(consent, "status", cmd_consent_status, "the gate's answer for every purpose")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--json", action="store_true")
    command(consent, "show", cmd_consent_show, "print a record as JSON").add_argument("record_id")
    command(consent, "schema", cmd_consent_schema, "print the consent record JSON Schema")

    vault = commands.add_parser("vault", help="encrypted photo vault").add_subparsers(dest="sub", required=True)
    sub = command(vault, "put", cmd_vault_put, "encrypt and store a photo; prints its file id")
    sub.add_argument("file")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--purpose", required=True, choices=purposes)
    sub = command(vault, "read", cmd_vault_read, "decrypt a photo through the consent gate")
    sub.add_argument("file_id")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--purpose", required=True, choices=purposes)
    sub.add_argument("--out", required=True)
    command(vault, "list", cmd_vault_list, "file ids of a subject").add_argument("--subject", required=True)
    command(vault, "rotate", cmd_vault_rotate, "new master key; re-wraps data keys, photos untouched")
    command(vault, "backup", cmd_vault_backup, "copy the encrypted blobs (never the keys)").add_argument("destination")

    audit = commands.add_parser("audit", help="tamper-evident audit log").add_subparsers(dest="sub", required=True)
    sub = command(audit, "verify", cmd_audit_verify,
                  "verify every entry and checkpoint; exit 1 naming the first bad entry")
    sub.add_argument("--log", help="log file (default: the configured one)")
    sub.add_argument("--public-key", help="Ed25519 public key PEM (default: the configured one)")
    command(audit, "checkpoint", cmd_audit_checkpoint, "sign a checkpoint of the log now")

    provenance = commands.add_parser("provenance", help="C2PA provenance").add_subparsers(dest="sub", required=True)
    sub = command(provenance, "sign", cmd_provenance_sign, "sign a generated image (in place unless --out)")
    sub.add_argument("image")
    sub.add_argument("--out")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--consent-record", required=True)
    sub.add_argument("--generator", required=True)
    sub.add_argument("--model-version", required=True)
    sub = command(provenance, "verify", cmd_provenance_verify,
                  "per image: trusted, untrusted, tampered or no-manifest; exit 1 unless all trusted")
    sub.add_argument("images", nargs="+")
    sub.add_argument("--json", action="store_true")
    sub.add_argument("--trust-anchor", action="append", help="PEM file (default: the configured anchors)")

    sub = command(commands, "audit-dir", cmd_audit_dir,
                  "compliance audit of a folder of images; exit 1 on any failure")
    sub.add_argument("directory")
    sub.add_argument("--json", nargs="?", const="-", metavar="PATH",
                     help="write the report as JSON (to stdout without PATH)")
    sub = command(commands, "release", cmd_release,
                  "release approved, consented images of a run: watermarked, re-signed, in a signed folder; "
                  "exit 1 if any was left behind")
    sub.add_argument("run_dir", help="the run folder (its manifest.jsonl names the images)")
    sub.add_argument("--to", required=True, help="the release folder (new or empty)")
    sub.add_argument("--json", action="store_true")
    sub.add_argument("--allow-partial", action="store_true", help="exit 0 when some were released")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConsentRefused as error:
        print(f"refused: {error}", file=sys.stderr)
        return 1
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
