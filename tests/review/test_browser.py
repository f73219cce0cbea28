"""The review app as people use it: a real server (`python -m eval.review`, uvicorn, subprocess) driven
by Playwright in Debian's Chromium, with the keyboard. Every request other than to the app is blocked
and fails the test; no console error is allowed; each page is screenshotted to artifacts/review/.
Then the audit log verifies and holds exactly one entry per action.

In CI (CI=true) a missing browser fails; elsewhere it skips (`.ci/install-browser` installs it)."""
from __future__ import annotations

import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from eval.review.store import ReviewStore
from governance import GovernanceContext
from tests.report.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.review.conftest import PASSWORD, SAMPLER
from tests.review.servers import review_server

SHOTS = ARTIFACTS / "review"
VOTE_KEYS = "ABTX"


class Browser:
    """One Chromium; each `user()` is a fresh context (own cookies) that only reaches `allowed`."""

    def __init__(self, chromium, allowed: str):
        self.chromium, self.allowed = chromium, allowed
        self.outside: list[str] = []
        self.problems: list[str] = []

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(self.allowed + "/"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    @contextmanager
    def user(self, name: str, password: str):
        context = self.chromium.new_context(viewport={"width": 1300, "height": 900})
        try:
            context.route("**/*", self._route)
            page = context.new_page()
            page.on("console", lambda m: self.problems.append(f"{name}: console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: self.problems.append(f"{name}: page error: {error}"))
            page.goto(f"{self.allowed}/rate")
            assert "/login" in page.url  # no session: sent to the login page
            # Keyboard only, as a user would: type once the cursor stands in the account field (autofocus).
            page.wait_for_function("document.activeElement && document.activeElement.id === 'name'")
            page.keyboard.type(name)
            page.keyboard.press("Tab")
            page.keyboard.type(password)
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert page.url == f"{self.allowed}/rate", page.url
            yield page
        finally:
            context.close()

    def check(self) -> None:
        assert self.outside == [], f"requests left the app: {self.outside}"
        assert self.problems == []


@pytest.fixture(scope="module")
def chromium():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def images_decoded(page) -> bool:
    return page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")


def rate_with_keys(page, limit: int | None = None, screenshot: str | None = None) -> int:
    """Rate images on /rate with the keyboard alone until done (or `limit`); return how many."""
    rated = 0
    while page.locator("#rating").count() and (limit is None or rated < limit):
        assert images_decoded(page)
        if screenshot and rated == 0:
            shot(page, screenshot)
        for key in "435":
            page.keyboard.press(key)
        if rated % 5 == 1:
            page.keyboard.press("R")  # the artefacts flag, now and then
        with page.expect_navigation():
            page.keyboard.press("Enter")
        rated += 1
    return rated


def vote_with_keys(page, limit: int | None = None, screenshot: str | None = None) -> list[str]:
    """Vote on /vote with A/B/T/X until done (or `limit`); return the revealed system pairs."""
    revealed = []
    while page.locator("#voting").count() and (limit is None or len(revealed) < limit):
        assert images_decoded(page)
        if screenshot and not revealed:
            shot(page, screenshot)
        with page.expect_navigation():
            page.keyboard.press(VOTE_KEYS[len(revealed) % 4])
        revealed.append(page.locator("#revealed").inner_text())
    return revealed


def review_actions(log_path: Path) -> Counter:
    gov_entries = [line for line in log_path.read_text().splitlines() if '"review.' in line]
    return Counter(re.search(r'"action":"(review\.[a-z]+)"', line).group(1) for line in gov_entries)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`python -m eval.review demo`, as a new user starts it; (server, {account: password}, workspace)."""
    workspace = tmp_path_factory.mktemp("review-demo") / "governance.toml"
    with review_server("demo", "--workspace", str(workspace)) as server:
        passwords = {match.group(1): match.group(2) for line in server.printed("one-time password")
                     if (match := re.search(r"(demo-\w+)\s+one-time password: (\S+)", line))}
        yield server, passwords, workspace


@pytest.mark.slow
def test_the_demo_a_reviewer_rates_everything_and_votes_every_pair_and_approval_is_refused(demo, chromium):
    server, passwords, workspace = demo
    assert server.printed(f"open {server.url}/") and set(passwords) == {"demo-reviewer", "demo-approver"}
    browser = Browser(chromium, server.url)
    with browser.user("demo-reviewer", passwords["demo-reviewer"]) as page:
        rated = rate_with_keys(page, screenshot="rate")
        assert rated == 29 and page.locator("#done").is_visible()
        shot(page, "rate-done")
        page.goto(f"{server.url}/vote")
        revealed = vote_with_keys(page, screenshot="vote")
        assert len(revealed) == 22 >= 3 and all("Left was" in text for text in revealed)
        shot(page, "vote-done")
        page.goto(f"{server.url}/")
        shot(page, "home")
    with browser.user("demo-approver", passwords["demo-approver"]) as page:
        page.goto(f"{server.url}/approve")
        shot(page, "approve-list")
        page.goto(f"{server.url}/approve/1")
        assert page.locator("#approve").is_disabled()
        blockers = page.locator("#blockers").inner_text()
        assert "avatar-generation consent of ardern: REFUSED: purpose not granted" in blockers
        assert "C2PA no-manifest" in blockers
        shot(page, "approve-refused-demo")
    browser.check()
    gov = GovernanceContext.load(workspace)
    assert gov.verify_audit_log().ok
    assert review_actions(gov.config.audit_log) == {"review.rating": 29, "review.vote": 22}


@pytest.mark.slow
def test_two_reviewers_at_once_in_two_browser_contexts(demo, chromium, password_hash):
    server, _, workspace = demo
    store = ReviewStore(f"sqlite:///{workspace.parent / 'review.sqlite'}")  # the demo's own store, shared live
    for name in ("rosa", "ruth"):
        store.add_account(name, "reviewer", password_hash)
    store.close()
    before = review_actions(GovernanceContext.load(workspace).config.audit_log)
    browser = Browser(chromium, server.url)
    with browser.user("rosa", PASSWORD) as rosa, browser.user("ruth", PASSWORD) as ruth:
        for _ in range(3):  # interleaved: each submits while the other has a page open
            assert rate_with_keys(rosa, limit=1) == 1 and rate_with_keys(ruth, limit=1) == 1
        rosa.goto(f"{server.url}/vote")
        ruth.goto(f"{server.url}/vote")
        for _ in range(2):
            assert len(vote_with_keys(rosa, limit=1)) == 1 and len(vote_with_keys(ruth, limit=1)) == 1
        shot(ruth, "vote-second-reviewer")
    browser.check()
    gov = GovernanceContext.load(workspace)
    after = review_actions(gov.config.audit_log)
    assert after - before == Counter({"review.rating": 6, "review.vote": 4}) and gov.verify_audit_log().ok
    actors = Counter(e["actor"] for e in gov.audit_log.entries() if e["action"].startswith("review."))
    assert actors["rosa"] == actors["ruth"] == 5


@pytest.mark.slow
def test_an_approver_approves_one_image_and_is_refused_on_a_copy_and_on_a_self_generated_run(
        signed_run, password_hash, chromium, tmp_path):
    database = tmp_path / "review.sqlite"
    store = ReviewStore(f"sqlite:///{database}")
    for name in ("alan", SAMPLER):
        store.add_account(name, "approver", password_hash)
    store.close()
    workspace = signed_run.gov.config.registry.parent / "governance.toml"
    log = signed_run.gov.audit_log
    before, checkpoints = len(log.entries()), log.verify().checkpoints
    with review_server("serve", str(signed_run.run.scores_dir), "--workspace", str(workspace),
                       "--database", f"sqlite:///{database}") as server:
        browser = Browser(chromium, server.url)
        with browser.user("alan", PASSWORD) as page:
            page.goto(f"{server.url}/approve/1")
            assert page.locator('#checks li[data-check="provenance"]').inner_text().startswith("OK")
            assert page.locator('#gates tr, table.gates tr').count() > 0 and images_decoded(page)
            shot(page, "approve-item")
            page.locator("#approve").focus()
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert page.locator("#status").inner_text() == "approved"
            shot(page, "approve-approved")
            page.goto(f"{server.url}/approve/2")
            assert page.locator("#approve").is_disabled()
            assert "copy-paste rule: FLAGGED" in page.locator("#blockers").inner_text()
            shot(page, "approve-refused-copy")
        with browser.user(SAMPLER, PASSWORD) as page:
            page.goto(f"{server.url}/approve")
            assert "Separation of duties" in page.locator("#self-generated").inner_text()
            page.goto(f"{server.url}/approve/1")
            assert "separation of duties" in page.locator("#self-generated").inner_text()
            assert page.locator("#approve").count() == 0
            shot(page, "approve-refused-self")
        browser.check()
    new = log.entries()[before:]
    assert [(e["action"], e["actor"], e["details"]["decision"]) for e in new] == [
        ("review.decision", "alan", "approve")]
    verification = signed_run.gov.verify_audit_log()
    assert verification.ok and verification.checkpoints > checkpoints  # the server sealed its entries on shutdown
