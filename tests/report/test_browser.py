"""The demo report in a real browser: headless Chromium (Debian's package) driven by Playwright.

No console error, no request leaving the file, the key sections visible, every image decoded, and a
screenshot saved to artifacts/report-screenshot.png. In CI (CI=true) a missing browser fails the test;
elsewhere it skips. `.ci/install-browser` installs the browser."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import pytest

from eval.report.__main__ import main

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
SECTIONS = ("gates", "headline", "scatter", "categories", "grids", "calibration", "comparison", "human-review",
            "models", "governance", "methods")


def require_browser():
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} not installed (run .ci/install-browser)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as exc:
            missing = f"the playwright package is not installed ({exc})"
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test cannot run in CI: {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory, demo_run) -> tuple[Path, str]:
    """`python -m eval.report` with no argument, as `make demo` runs it, in a scratch folder:
    (the report, what it printed)."""
    folder = tmp_path_factory.mktemp("make-demo")
    cwd, printed = Path.cwd(), io.StringIO()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(printed):
            assert main([]) == 0
    finally:
        os.chdir(cwd)
    return folder / "reports" / "demo.html", printed.getvalue()


@pytest.mark.slow
def test_make_demo_writes_reports_demo_html_and_prints_its_path(demo_report):
    path, printed = demo_report
    assert path.is_file() and path.read_text().startswith("<!DOCTYPE html>")
    assert printed.strip() == str(path.resolve())


@contextlib.contextmanager
def offline_page(path: Path, profile: Path):
    """Chromium with a fresh profile on `path`; yields (page, requests that left the file, problems)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    outside, problems = [], []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(("file:", "data:")):
            request_route.continue_()
        else:
            outside.append(url)
            request_route.abort()

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900})
        try:
            context.route("**/*", route)
            page = context.new_page()
            page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
                    if message.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.goto(path.as_uri(), wait_until="load")
            yield page, outside, problems
        finally:
            context.close()


@pytest.mark.slow
def test_the_browser_check_catches_a_request_leaving_the_file(tmp_path):
    leaky = tmp_path / "leaky.html"
    leaky.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/x.png"></body></html>')
    with offline_page(leaky, tmp_path / "profile") as (_, outside, problems):
        pass
    assert outside == ["http://example.invalid/x.png"]
    assert problems  # the aborted load is reported on the console


@pytest.mark.slow
def test_the_demo_report_opens_offline_in_chromium(demo_report, tmp_path):
    path, _ = demo_report
    with offline_page(path, tmp_path / "profile") as (page, outside, problems):
        for section in SECTIONS:
            assert page.locator(f"section#{section}").is_visible(), section
        assert page.locator("#gates h2 .verdict").inner_text() == "PASS"  # the demo's 'ideal' system
        assert page.locator('#gates tr[data-gate="id_sim_sface"] .verdict').inner_text() == "PASS"
        generation = page.locator('#governance td[data-purpose="avatar-generation"]').all_inner_texts()
        assert len(generation) >= 3 and all("REFUSED" in text for text in generation)
        evaluation = page.locator('#governance td[data-purpose="evaluation"]').all_inner_texts()
        assert evaluation and all("ALLOWED" in text for text in evaluation)
        assert page.evaluate("document.images.length") > 30
        assert page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length") == 0
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "report-screenshot.png"
        page.screenshot(path=str(screenshot), full_page=True)
    assert outside == [], f"requests left the file: {outside}"
    assert problems == []
    assert screenshot.stat().st_size > 50_000
    shutil.copyfile(path, ARTIFACTS / "demo.html")
