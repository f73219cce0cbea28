"""`python -m eval.review serve RUN | demo | user add|list|disable` — the human review app.

serve RUN        RUN: a run manifest or a scores folder (as eval.report takes; a manifest is scored first)
demo             the built-in demo run with a fresh demo workspace; prints the URL and one-time passwords
actions          verify the audit log and list every review action in it
user add NAME    --role reviewer|approver|admin; the password from stdin (--password-stdin) or generated
user list / user disable NAME
export RUN       --out DIR: the run's ratings, votes and decisions as parquet files + review_summary.json
                 (the statistics of eval.review.stats), for `python -m eval.report RUN --reviews DIR`

Every command takes --workspace (default $GOVERNANCE_CONFIG, else ./governance.toml): its audit log
gets every rating, vote and decision. The review store is --database (a path, sqlite:/// or
postgresql:// URL), else $IDAVATAR_REVIEW_DATABASE, else the workspace's `review_store`, else
review.sqlite beside the workspace.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from eval.review.store import DATABASE_ENV, ROLES, ReviewStore, StoreError, workspace_store
from governance.database import StoreUnavailable



def workspace_of(args: argparse.Namespace) -> Path:
    return Path(args.workspace or os.environ.get("GOVERNANCE_CONFIG") or "governance.toml")


def database_url(args: argparse.Namespace, workspace: Path) -> str | Path:
    return workspace_store(workspace, args.database)


def open_store(args: argparse.Namespace, workspace: Path) -> ReviewStore:
    if not args.database and not os.environ.get(DATABASE_ENV) and not workspace.is_file():
        raise StoreError(f"{workspace}: no governance workspace (give --workspace, set $GOVERNANCE_CONFIG, "
                         "or run `python -m governance init DIR`)")
    return ReviewStore(database_url(args, workspace))


def cmd_user(args: argparse.Namespace) -> int:
    from eval.review.auth import check_account_name, generate_password, hash_password

    store = open_store(args, workspace_of(args))
    if args.user_command == "list":
        for account in store.accounts():
            print(f"{account.name}\t{account.role}\t{'active' if account.active else 'disabled'}")
        return 0
    if args.user_command == "disable":
        store.update_account(args.name, active=False, api_token_hash=None)
        print(f"disabled {args.name}")
        return 0
    name = check_account_name(args.name)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else generate_password()
    if not password:
        raise StoreError("an empty password was given on stdin")
    store.add_account(name, args.role, hash_password(password))
    print(f"added {name} ({args.role})" + ("" if args.password_stdin else f"; one-time password: {password}"))
    return 0


def _serve(app, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")


def cmd_serve(args: argparse.Namespace) -> int:
    from eval.report.gates import load_gate_spec
    from eval.report.governance_checks import load_context
    from eval.review.app import create_app
    from eval.review.catalog import build_catalog, load_review_run

    workspace = workspace_of(args)
    context, source = load_context(workspace if workspace.is_file() else None)
    if context is None:
        raise StoreError(f"governance workspace: {source}; the review app needs one for its audit log")
    store = open_store(args, workspace)
    run = load_review_run(args.run)
    catalog = build_catalog(run, load_gate_spec(args.gates), context, pairs=args.pair)
    app = create_app(catalog, store, context, ratings_per_image=args.ratings_per_image)
    print(f"eval.review: run {catalog.run_id}: {len(catalog.items)} images, {len(catalog.pairs)} A/B pairs; "
          f"serving http://{args.host}:{args.port}/", flush=True)
    _serve(app, args.host, args.port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from eval.review.demo import prepare_demo

    folder = Path(args.workspace).resolve().parent if args.workspace else Path(
        tempfile.mkdtemp(prefix="idavatar-review-demo-"))
    app, passwords, catalog = prepare_demo(folder, database=args.database or os.environ.get(DATABASE_ENV),
                                           ratings_per_image=args.ratings_per_image)
    print(f"eval.review demo: run {catalog.run_id}, {len(catalog.items)} images, {len(catalog.pairs)} A/B pairs; "
          f"workspace {folder / 'governance.toml'}")
    print(f"  open http://{args.host}:{args.port}/")
    for name, (role, password) in passwords.items():
        print(f"  {role:<9} {name:<14} one-time password: {password}")
    sys.stdout.flush()
    _serve(app, args.host, args.port)
    return 0


def cmd_actions(args: argparse.Namespace) -> int:
    from eval.report.governance_checks import load_context
    from governance.audit_log import describe_entry
    from governance.review_log import REVIEW_ACTIONS

    workspace = workspace_of(args)
    context, source = load_context(workspace if workspace.is_file() else None)
    if context is None:
        raise StoreError(f"governance workspace: {source}")
    verification = context.verify_audit_log()
    print(verification)
    for entry in context.audit_log.entries():
        if entry.get("action") in REVIEW_ACTIONS:
            print(describe_entry(entry))
    return 0 if verification.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    from eval.review.catalog import load_review_run
    from eval.review.export import export_run

    run = load_review_run(args.run)
    frames = open_store(args, workspace_of(args)).export_frames(run_id=run.name)
    out = export_run(frames, run.scores, run.summary, args.out)
    print(f"eval.review export: run {run.name}: {len(frames['ratings'])} ratings, {len(frames['votes'])} votes, "
          f"{len(frames['decisions'])} decisions -> {out}")
    return 0


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"{text!r}: give two systems as A:B")
    return a, b


def build_parser() -> argparse.ArgumentParser:
    from eval.report.gates import DEFAULT_GATES_FILE

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", help="governance.toml (default $GOVERNANCE_CONFIG, else ./governance.toml)")
    common.add_argument("--database", help=f"the review store: a path, sqlite:/// or postgresql:// URL (default "
                                           f"${DATABASE_ENV}, else the workspace's review_store, else review.sqlite "
                                           "beside the workspace)")
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8000)
    server.add_argument("--ratings-per-image", type=int, default=3, help="ratings wanted per image (HEIM uses 5)")

    parser = argparse.ArgumentParser(prog="python -m eval.review", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", parents=[common, server], help="serve one run for review")
    serve.add_argument("run", type=Path, help="run manifest (JSONL) or scores folder")
    serve.add_argument("--gates", type=Path, default=DEFAULT_GATES_FILE, help="gates file (default: %(default)s)")
    serve.add_argument("--pair", type=_pair, action="append",
                       help="systems to compare A/B, as A:B (repeatable; default: every pair of systems)")
    serve.set_defaults(handler=cmd_serve)
    demo = commands.add_parser("demo", parents=[common, server], help="serve the built-in demo run")
    demo.set_defaults(handler=cmd_demo)
    actions = commands.add_parser("actions", parents=[common], help="verify the audit log; list its review actions")
    actions.set_defaults(handler=cmd_actions)
    export = commands.add_parser("export", parents=[common], help="write a run's reviews and their statistics")
    export.add_argument("run", type=Path, help="run manifest (JSONL) or scores folder")
    export.add_argument("--out", type=Path, required=True, help="folder for the parquet files and review_summary.json")
    export.set_defaults(handler=cmd_export)
    user_parser = commands.add_parser("user", help="review accounts")
    user_parser.set_defaults(handler=cmd_user)
    user = user_parser.add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", parents=[common], help="add an account")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    user.add_parser("list", parents=[common], help="list accounts")
    user.add_parser("disable", parents=[common], help="disable an account").add_argument("name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (StoreError, StoreUnavailable, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
