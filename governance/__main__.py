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

from governance.audit_log import (
    AuditLog, AuditVerification, describe_entry, generate_key_pair, load_private_key, load_public_key,
)
from governance.audit_sql import AuditStoreError, SqlAuditLog
from governance.checkpoint import (
    COSIGNATURE_V1, ED25519, Checkpoint, VerifierKey, check_key_name, cosign, fingerprint,
)
from governance.compliance import audit_dir
from governance.consent import LawfulBasis, Purpose, UsageLimits, json_schema, new_record
from governance.context import CONFIG_ENV, GovernanceContext
from governance.database import StoreUnavailable, is_url
from governance.demo import create_demo_governance
from governance.keys import LocalMasterKey, WrongMasterKey
from governance.pki import NOT_FOR_PRODUCTION, init_test_pki
from governance.provenance import ProvenanceVerifier
from governance.files import write_atomically
from governance.registry import ConsentRefused, ConsentRegistry, UnknownRecord
from governance import watermark
from governance.release import release
from governance.release_check import trace_watermark
from governance.roles import Actor, Permission, PermissionDenied, Role
from governance.vault import VaultError

EXPECTED_ERRORS = (ConsentRefused, PermissionDenied, VaultError, WrongMasterKey, UnknownRecord, ValidationError,
                   FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, KeyError,
                   StoreUnavailable, AuditStoreError)


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
    print(f"trust anchor: {gov.config.trust_anchors[0]}")
    _print_vkey(gov)
    return 0


def _print_vkey(gov: GovernanceContext) -> None:
    print(f"audit log vkey: {gov.audit_vkey}")
    print(f"audit log key fingerprint: {fingerprint(gov.audit_vkey.public_key)}")
    print("give auditors the vkey out of band; they pin it with `audit verify --vkey VKEY`")


def cmd_pki_init(args) -> int:
    pki = init_test_pki(args.directory)
    print(f"{NOT_FOR_PRODUCTION}\ntrust anchor: {pki.root_cert}\nsigning certificate: {pki.signing_cert}\n"
          f"signing key: {pki.signing_key}")
    return 0


def cmd_demo_init(args) -> int:
    create_demo_governance(args.directory, args.subjects)
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


def _workspace(args, needed_for: str) -> GovernanceContext:
    """The configured workspace, where a verification was not given public material enough to run without it."""
    try:
        return _gov(args)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}; without a workspace, pass {needed_for}") from None


def _pinned_key(args) -> tuple[VerifierKey | None, object]:
    """(vkey, public key) from --vkey or --public-key; (None, None) when neither was given."""
    if args.vkey:
        key = VerifierKey.parse(args.vkey, ED25519)
        return key, key.public_key
    if args.public_key:
        return None, load_public_key(args.public_key)
    return None, None


def _log_to_verify(args) -> tuple[AuditLog, str]:
    """The log to verify and a line saying which key it is verified against."""
    vkey, public_key = _pinned_key(args)
    gov = None
    if public_key is None or args.log is None:
        gov = _workspace(args, "--log LOG and --vkey VKEY (or --public-key PEM)")
    location = args.log if args.log else gov.config.audit_log
    checkpoints = args.checkpoints or (gov.config.audit_checkpoints if gov and not args.log else None)
    origin = vkey.name if vkey else (gov.config.audit_origin if gov else None)
    if public_key is None:
        public_key = gov.audit_log.public_key
        trust = (f"trusted key: the workspace's own {gov.config.audit_public_key} ({fingerprint(public_key)}), "
                 "not pinned: whoever can write the workspace can replace it; pin with --vkey VKEY")
    else:
        trust = f"trusted key: pinned {vkey.name if vkey else args.public_key} ({fingerprint(public_key)})"
    if is_url(location):
        return SqlAuditLog(location, public_key=public_key, origin=origin), trust
    return AuditLog(Path(location), public_key=public_key, checkpoint_dir=checkpoints, origin=origin), trust


def _verify_log(args) -> tuple[AuditLog, AuditVerification, str]:
    log, trust = _log_to_verify(args)
    witnesses = [VerifierKey.parse(vkey, COSIGNATURE_V1) for vkey in args.witness or []]
    state_path = Path(args.state) if getattr(args, "state", None) else None
    state = None
    if state_path and state_path.exists():
        state = Checkpoint.parse_and_verify(state_path.read_text(encoding="utf-8"), log.public_key, log.origin)
    result = log.verify(allow_unchecked_tail=args.allow_unchecked_tail, state=state, witnesses=witnesses)
    if state_path and result.ok and result.newest_checkpoint:
        write_atomically(state_path, result.newest_checkpoint.encode("utf-8"))
        trust += f"\nstate: {state_path} now remembers the newest checkpoint"
    return log, result, trust


def cmd_audit_verify(args) -> int:
    """Needs the log and its public key; the workspace only for what was not given."""
    log, result, trust = _verify_log(args)
    print(result)
    print(trust)
    if args.list:
        for entry in log.entries():
            print(describe_entry(entry))
    return 0 if result.ok else 1



def cmd_audit_vkey(args) -> int:
    _print_vkey(_gov(args))
    return 0


def cmd_witness_keygen(args) -> int:
    check_key_name(args.name)
    key = generate_key_pair(args.key, Path(args.key + ".pub.pem"))
    print(f"witness key: {args.key} (keep it secret), public key: {args.key}.pub.pem")
    print(f"witness vkey: {VerifierKey(args.name, key.public_key(), COSIGNATURE_V1)}")
    return 0


def cmd_witness_cosign(args) -> int:
    key = load_private_key(args.key)
    path = Path(args.checkpoint)
    note = path.read_text(encoding="utf-8")
    if args.vkey:  # a witness vouches only for what the log itself signed
        log_key = VerifierKey.parse(args.vkey, ED25519)
        Checkpoint.parse_and_verify(note, log_key.public_key, log_key.name)
    write_atomically(path, cosign(note, args.name, key).encode("utf-8"))
    print(f"cosigned {path} as witness {VerifierKey(args.name, key.public_key(), COSIGNATURE_V1)}")
    return 0


def cmd_audit_export(args) -> int:
    log = _gov(args).audit_log
    if not isinstance(log, SqlAuditLog):
        raise ValueError(f"the audit log {log.path} is already a file: copy it and {log.checkpoints.directory}")
    to, folder = log.export(args.to)
    print(f"exported {to} and {folder}/; verify with: python -m governance audit verify --log {to} --vkey VKEY")
    return 0


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


def _trust_anchors(args) -> list:
    return args.trust_anchor or _workspace(args, "--trust-anchor ROOT.pem").config.trust_anchors


def _watermark_lookup(args):
    """Names the release item a manifest-less image's watermark carries, from the workspace's audit log;
    None without a workspace."""
    try:
        entries = list(_gov(args).audit_log.entries())
    except FileNotFoundError:
        return None
    return lambda path: trace_watermark(path, entries)


def cmd_provenance_verify(args) -> int:
    verifier = ProvenanceVerifier(_trust_anchors(args), watermark_lookup=_watermark_lookup(args))
    results = verifier.verify_many(args.images)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            status = f"{r.status}, {r.watermark}" if r.watermark else r.status
            print(f"{r.path}: {status}  consent record: {r.consent_record_id or '-'}  ({r.detail})")
    return 0 if all(r.trusted for r in results) else 1


def cmd_audit_dir(args) -> int:
    log, verification, trust = _verify_log(args)
    if args.registry:
        if not is_url(args.registry) and not Path(args.registry).is_file():
            raise FileNotFoundError(f"consent registry {args.registry} not found; pass the SQLite file or its URL")
        registry = ConsentRegistry(args.registry)
    else:
        registry = _workspace(args, "--registry consent.sqlite").registry
    report = audit_dir(args.directory, verifier=ProvenanceVerifier(_trust_anchors(args)), audit_log=log,
                       registry=registry, verification=verification)
    if args.json == "-":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
        print(trust)
        if args.json:
            Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0 if report.ok else 1


def cmd_release(args) -> int:
    result = release(args.run_dir, args.to, _gov(args), actor=_actor(args), method=args.watermark)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0 if args.allow_partial and result.items or not result.left_behind else 1


# -- parser ---------------------------------------------------------------------------------------

def _command(group, name, handler, help):
    sub = group.add_parser(name, help=help, description=help)
    sub.set_defaults(handler=handler)
    return sub


def _add_workspace_commands(commands) -> None:
    sub = _command(commands, "init", cmd_init, "create a workspace: config, master key, audit key, test PKI")
    sub.add_argument("directory")
    sub.add_argument("--controller", default="idavatar operator")
    sub.add_argument("--jurisdiction", default="EU")
    sub = _command(commands, "demo-init", cmd_demo_init,
                   "workspace whose subjects are recorded for evaluation and calibration only")
    sub.add_argument("directory")
    sub.add_argument("subjects", nargs="+")
    pki = commands.add_parser("pki", help="local test PKI").add_subparsers(dest="pki_command", required=True)
    _command(pki, "init", cmd_pki_init, f"make a test root + signing certificate ({NOT_FOR_PRODUCTION})") \
        .add_argument("directory")


def _add_consent_commands(commands) -> None:
    consent = commands.add_parser("consent", help="consent records").add_subparsers(dest="sub", required=True)
    purposes = [p.value for p in Purpose]
    sub = _command(consent, "give", cmd_consent_give, "record consent given; prints the record id")
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
    sub = _command(consent, "withdraw", cmd_consent_withdraw, "withdraw consent and crypto-shred the subject's key")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--reason")
    sub = _command(consent, "check", cmd_consent_check, "the consent gate; exit 1 when refused")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--purpose", required=True, choices=purposes)
    sub.add_argument("--at", type=_time, help="default now")
    sub = _command(consent, "status", cmd_consent_status, "the gate's answer for every purpose")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--json", action="store_true")
    _command(consent, "show", cmd_consent_show, "print a record as JSON").add_argument("record_id")
    _command(consent, "schema", cmd_consent_schema, "print the consent record JSON Schema")


def _add_vault_commands(commands) -> None:
    purposes = [p.value for p in Purpose]
    vault = commands.add_parser("vault", help="encrypted photo vault").add_subparsers(dest="sub", required=True)
    sub = _command(vault, "put", cmd_vault_put, "encrypt and store a photo; prints its file id")
    sub.add_argument("file")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--purpose", required=True, choices=purposes)
    sub = _command(vault, "read", cmd_vault_read, "decrypt a photo through the consent gate")
    sub.add_argument("file_id")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--purpose", required=True, choices=purposes)
    sub.add_argument("--out", required=True)
    _command(vault, "list", cmd_vault_list, "file ids of a subject").add_argument("--subject", required=True)
    _command(vault, "rotate", cmd_vault_rotate, "new master key; re-wraps data keys, photos untouched")
    _command(vault, "backup", cmd_vault_backup, "copy the encrypted blobs (never the keys)") \
        .add_argument("destination")


def _add_log_verification_options(sub) -> None:
    """What verifying the audit log takes; each given option replaces the workspace's value."""
    sub.add_argument("--log", help="log file or postgresql:// URL (default: the configured one)")
    sub.add_argument("--checkpoints", help="checkpoint folder (default: beside the log)")
    pin = sub.add_mutually_exclusive_group()
    pin.add_argument("--vkey", help="pin the log's key and origin: the vkey string `init` printed")
    pin.add_argument("--public-key", help="pin the log's key: Ed25519 public key PEM")
    sub.add_argument("--allow-unchecked-tail", type=int, metavar="N",
                     help="accept up to N entries after the newest checkpoint (default: checkpoint_every, "
                          "0 when there is no checkpoint)")
    sub.add_argument("--witness", action="append", metavar="VKEY",
                     help="require a valid cosignature by this witness on some checkpoint (repeatable)")
    sub.add_argument("--trust-anchor", action="append", help="PEM file (default: the configured anchors)")


def _add_verification_commands(commands) -> None:
    audit = commands.add_parser("audit", help="tamper-evident audit log").add_subparsers(dest="sub", required=True)
    sub = _command(audit, "verify", cmd_audit_verify,
                   "verify every entry and checkpoint; exit 1 naming the first bad entry")
    _add_log_verification_options(sub)
    sub.add_argument("--list", action="store_true", help="then list every entry, one line each")
    sub.add_argument("--state", metavar="FILE",
                     help="remember the newest accepted checkpoint here; fail if a later log is not its extension")
    _command(audit, "checkpoint", cmd_audit_checkpoint, "sign a checkpoint of the log now")
    sub = _command(audit, "export", cmd_audit_export,
                   "write a database audit log as the file backend's JSONL and checkpoint folder")
    sub.add_argument("--to", required=True, metavar="FILE", help="the JSONL file (checkpoints go to FILE.checkpoints/)")
    _command(audit, "vkey", cmd_audit_vkey, "print the log's vkey and key fingerprint")
    witness = audit.add_parser("witness", help="witness cosignatures (C2SP tlog-cosignature/v1)") \
        .add_subparsers(dest="witness_command", required=True)
    sub = _command(witness, "keygen", cmd_witness_keygen, "make a witness key; prints its vkey")
    sub.add_argument("key", help="private key file to create (PEM)")
    sub.add_argument("--name", required=True, help="the witness's name (no spaces or '+')")
    sub = _command(witness, "cosign", cmd_witness_cosign, "add this witness's cosignature to a checkpoint")
    sub.add_argument("checkpoint")
    sub.add_argument("--key", required=True, help="the witness's private key (PEM)")
    sub.add_argument("--name", required=True, help="the witness's name, as in its vkey")
    sub.add_argument("--vkey", help="the log's vkey: cosign only if the log's own signature verifies")

    provenance = commands.add_parser("provenance", help="C2PA provenance").add_subparsers(dest="sub", required=True)
    sub = _command(provenance, "sign", cmd_provenance_sign, "sign a generated image (in place unless --out)")
    sub.add_argument("image")
    sub.add_argument("--out")
    sub.add_argument("--subject", required=True)
    sub.add_argument("--consent-record", required=True)
    sub.add_argument("--generator", required=True)
    sub.add_argument("--model-version", required=True)
    sub = _command(provenance, "verify", cmd_provenance_verify, "per image: trusted, untrusted, tampered, "
                   "no-manifest or unreadable; exit 1 unless all trusted")
    sub.add_argument("images", nargs="+")
    sub.add_argument("--json", action="store_true")
    sub.add_argument("--trust-anchor", action="append", help="PEM file (default: the configured anchors)")

    sub = _command(commands, "audit-dir", cmd_audit_dir,
                   "compliance audit of every file under a folder; exit 1 on any failure")
    sub.add_argument("directory")
    sub.add_argument("--json", nargs="?", const="-", metavar="PATH",
                     help="write the report as JSON (to stdout without PATH)")
    sub.add_argument("--registry", help="consent registry: SQLite file or database URL (default: the configured one)")
    _add_log_verification_options(sub)


def _add_release_commands(commands) -> None:
    sub = _command(commands, "release", cmd_release,
                   "release approved, consented images of a run: watermarked, re-signed, in a signed folder; "
                   "exit 1 if any was left behind")
    sub.add_argument("run_dir", help="the run folder (its manifest.jsonl names the images)")
    sub.add_argument("--to", required=True, help="the release folder (new or empty)")
    sub.add_argument("--json", action="store_true")
    sub.add_argument("--allow-partial", action="store_true", help="exit 0 when some were released")
    sub.add_argument("--watermark", default=watermark.DEFAULT_METHOD,
                     choices=[watermark.DWT_DCT_SVD, watermark.RIVAGAN], help="dwtDctSvd (default, fast) or rivaGan (also survives crops and brightness, ~20x slower)")


# A new command group: write its _add_*_commands(commands) and list it here.
COMMAND_GROUPS = (_add_workspace_commands, _add_consent_commands, _add_vault_commands, _add_verification_commands,
                  _add_release_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m governance",
        description="Consent records, encrypted photo vault, tamper-evident audit log, C2PA provenance.",
        epilog="Exit status: 0 success, 1 a check failed, 2 an error. Verifying needs no role or secret.")
    parser.add_argument("--config", help=f"governance.toml (default ${CONFIG_ENV}, else ./governance.toml)")
    parser.add_argument("--actor", default=os.environ.get("GOVERNANCE_ACTOR") or _login(),
                        help="who acts (recorded in the audit log; default $GOVERNANCE_ACTOR or the login)")
    parser.add_argument("--role", default=os.environ.get("GOVERNANCE_ROLE", "operator"),
                        choices=[r.value for r in Role], help="default $GOVERNANCE_ROLE or operator")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_commands in COMMAND_GROUPS:
        add_commands(commands)
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
