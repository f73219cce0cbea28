"""`python -m eval.review demo`: the built-in demo run (the one `make demo` reports on) in a fresh
demo workspace, with a demo reviewer and a demo approver.

The demo's people consented to evaluation only and its images are real photographs without C2PA
manifests, so every approval is refused, with those reasons shown: the honest outcome.
"""
from __future__ import annotations

from pathlib import Path

from eval.report.gates import load_gate_spec
from eval.report.run import load_run
from eval.review.app import create_app
from eval.review.auth import generate_password, hash_password
from eval.review.catalog import Catalog, build_catalog
from eval.review.store import ReviewStore

DEMO_ACCOUNTS = {"demo-reviewer": "reviewer", "demo-approver": "approver"}
DEMO_CONTROLLER = "idavatar demo (evaluation only)"  # the controller governance.demo writes into its workspaces


def prepare_demo(folder: Path, *, database: str | None = None, ratings_per_image: int = 3,
                 progress: bool = True) -> tuple[object, dict[str, tuple[str, str]], Catalog]:
    """(the app, {account: (role, one-time password)}, the catalog). The workspace in `folder` is created
    (or reused); each demo account gets a new password on every start."""
    from governance.context import CONFIG_NAME, GovernanceContext
    from governance.demo import create_demo_governance

    existing = folder / CONFIG_NAME
    if existing.is_file() and GovernanceContext.load(existing).config.controller != DEMO_CONTROLLER:
        raise ValueError(f"{existing}: not a demo workspace; the demo records its own consent, so give it a "
                         "new folder (or none: a fresh temporary one)")
    run = load_run(None, with_governance=False, progress=progress)
    context = create_demo_governance(folder, sorted(run.scores["subject"].unique()))
    store = ReviewStore(database or f"sqlite:///{folder.resolve() / 'review.sqlite'}")
    passwords = {}
    for name, role in DEMO_ACCOUNTS.items():
        password = generate_password()
        if store.account(name) is None:
            store.add_account(name, role, hash_password(password))
        else:
            store.update_account(name, password_hash=hash_password(password), active=True)
        passwords[name] = (role, password)
    catalog = build_catalog(run, load_gate_spec(), context)
    return create_app(catalog, store, context, ratings_per_image=ratings_per_image), passwords, catalog
