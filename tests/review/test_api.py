"""The JSON API and the pages against the app on a real signed run: the three tasks, and every bad-input
case of the issue's section 5 (status code, and that nothing was written: no row, no audit entry)."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from governance import Actor
from tests.review.conftest import BASE, PASSWORD, SAMPLER

PAGES = ["/", "/rate", "/vote", "/approve", "/approve/1"]


def next_rating(server, headers) -> dict:
    answer = server.client.get("/api/v1/ratings/next", headers=headers)
    assert answer.status_code == 200
    return answer.json()


def rate(server, headers, **values):
    task = next_rating(server, headers)
    body = {"token": task["token"], "line": task["item"]["line"], "likeness": 4, "prompt_fidelity": 3, "quality": 5}
    return server.client.post("/api/v1/ratings", json=body | values, headers=headers)


def decision_token(server, headers, line: int) -> str:
    answer = server.client.get(f"/api/v1/items/{line}", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def page_login(client, name: str, password: str = PASSWORD):
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    return client.post("/login", data={"name": name, "password": password, "csrf": csrf}, follow_redirects=False)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


# -- the three tasks ------------------------------------------------------------------------------------

def test_a_rating_is_a_row_and_an_audit_entry_and_never_twice(server):
    rita = server.token("rita")
    task = next_rating(server, rita)
    assert "system" not in task["item"] and "scores" not in task["item"]  # blind: no name, no automatic score
    answer = rate(server, rita, flags=["artefacts", "other"], other_text="<i>odd ear</i>")
    assert answer.status_code == 201, answer.text
    entry = server.gov.audit_log.entries()[-1]
    assert entry["seq"] == answer.json()["audit_seq"] and entry["action"] == "review.rating"
    assert entry["actor"] == "rita" and entry["role"] == "reviewer"
    assert entry["object"] == server.catalog.items[task["item"]["line"]].sha256
    assert entry["details"]["flags"] == ["artefacts", "other"] and entry["details"]["likeness"] == 4
    again = server.client.post("/api/v1/ratings", json={"token": task["token"], "line": task["item"]["line"],
                                                        "likeness": 1, "prompt_fidelity": 1, "quality": 1},
                               headers=rita)
    assert again.status_code == 409
    ratings = server.store.export_frames()["ratings"]
    assert len(ratings) == 1 and ratings.loc[0, "other_text"] == "<i>odd ear</i>"
    assert ratings.loc[0, "presented_position"] == task["position"] and ratings.loc[0, "time_spent_s"] >= 0


def test_each_reviewer_gets_every_image_once_in_their_own_order_with_skips_recorded(server):
    orders = {}
    for name in ("rita", "rosa"):
        headers, seen = server.token(name), []
        while not (task := next_rating(server, headers))["done"]:
            seen.append(task["item"]["line"])
            skip = len(seen) == 1
            answer = server.client.post("/api/v1/ratings", headers=headers, json={
                "token": task["token"], "line": task["item"]["line"], "skipped": skip,
                **({} if skip else {"likeness": 3, "prompt_fidelity": 3, "quality": 3})})
            assert answer.status_code == 201, answer.text
        orders[name] = seen
        assert sorted(seen) == sorted(server.catalog.items)
    assert orders["rita"] != orders["rosa"]
    ratings = server.store.export_frames()["ratings"]
    assert ratings["skipped"].sum() == 2 and ratings.loc[ratings["skipped"], "likeness"].isna().all()


def test_k_ratings_close_an_image(server, signed_run, password_hash, tmp_path):
    from fastapi.testclient import TestClient

    from eval.review.app import create_app
    from eval.review.store import ReviewStore

    store = ReviewStore(f"sqlite:///{tmp_path / 'k1.sqlite'}")
    for name in ("rita", "rosa"):
        store.add_account(name, "reviewer", password_hash)
    with TestClient(create_app(signed_run.catalog, store, signed_run.gov, ratings_per_image=1)) as client:
        token = client.post("/api/v1/token", json={"name": "rita", "password": PASSWORD}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        while not (task := client.get("/api/v1/ratings/next", headers=headers).json())["done"]:
            client.post("/api/v1/ratings", headers=headers, json={"token": task["token"], "line": task["item"]["line"],
                                                                  "likeness": 2, "prompt_fidelity": 2, "quality": 2})
        token = client.post("/api/v1/token", json={"name": "rosa", "password": PASSWORD}).json()["token"]
        assert client.get("/api/v1/ratings/next", headers={"Authorization": f"Bearer {token}"}).json()["done"]
    store.close()


def test_a_vote_hides_the_systems_until_cast_and_stores_the_presented_order(server):
    rita = server.token("rita")
    outcomes = ["left", "right"]
    for outcome in outcomes:
        task = server.client.get("/api/v1/pairs/next", headers=rita).json()
        assert "cand" not in str(task["pair"]) and "base" not in str(task["pair"])
        answer = server.client.post("/api/v1/votes", json={"token": task["token"], "outcome": outcome}, headers=rita)
        assert answer.status_code == 201, answer.text
        shown = answer.json()
        assert {shown["left_system"], shown["right_system"]} == {"cand", BASE}
        assert shown["winner"] == shown[f"{outcome}_system"]
        left_line = int(task["pair"]["left"]["image_url"].rsplit("/", 1)[1])
        assert server.store.vote(shown["vote_id"]).line_left == left_line
    assert server.client.get("/api/v1/pairs/next", headers=rita).json()["done"]
    votes = server.store.export_frames()["votes"]
    assert sorted(votes["outcome"]) == ["left", "right"]
    assert [e["action"] for e in server.gov.audit_log.entries()[-2:]] == ["review.vote"] * 2


def test_approval_follows_the_gates_consent_provenance_and_separation_of_duties(server):
    alan, sam = server.token("alan"), server.token(SAMPLER)
    view = server.client.get("/api/v1/items/1", headers=alan).json()
    assert view["can_approve"] and {c["name"]: c["ok"] for c in view["checks"]} == {
        "provenance": True, "consent": True, "copy-paste": True}
    assert view["gates"] and view["scores"]["id_sim_sface"] > 0.5
    approved = server.client.post("/api/v1/decisions", headers=alan, json={
        "token": view["token"], "line": 1, "decision": "approve"})
    assert approved.status_code == 201, approved.text
    before = server.written()
    for line, why in ((2, "copy-paste rule: FLAGGED"), (3, "C2PA no-manifest")):
        view = server.client.get(f"/api/v1/items/{line}", headers=alan).json()
        assert not view["can_approve"] and any(why in reason for reason in view["blockers"])
        refused = server.client.post("/api/v1/decisions", headers=alan, json={
            "token": view["token"], "line": line, "decision": "approve"})
        assert refused.status_code == 409 and why in refused.text
    token = decision_token(server, sam, 1)
    own = server.client.post("/api/v1/decisions", headers=sam, json={"token": token, "line": 1, "decision": "approve"})
    assert own.status_code == 403 and "separation of duties" in own.text
    assert server.written() == before
    rejected = server.client.post("/api/v1/decisions", headers=alan, json={
        "token": decision_token(server, alan, 2), "line": 2, "decision": "reject", "reason": "a copy of the photo"})
    assert rejected.status_code == 201
    from governance.review_log import latest_decisions

    latest = latest_decisions(server.gov.audit_log.entries())
    assert latest[server.catalog.items[1].sha256].approved
    assert latest[server.catalog.items[2].sha256].reason == "a copy of the photo"
    statuses = {i["line"]: i["status"] for i in server.client.get("/api/v1/items", headers=alan).json()["items"]}
    assert statuses == {1: "approved", 2: "rejected", 3: "undecided", 4: "undecided", 5: "undecided"}
    assert server.gov.verify_audit_log().ok


def test_a_withdrawal_of_consent_revokes_an_earlier_approval_at_read_time(tmp_path, password_hash):
    from fastapi.testclient import TestClient

    from eval.report.gates import load_gate_spec
    from eval.review.app import create_app
    from eval.review.catalog import build_catalog, load_review_run
    from eval.review.store import ReviewStore
    from tests.review.conftest import build_signed_run

    manifest, gov = build_signed_run(tmp_path)
    run = load_review_run(manifest, progress=False)
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.sqlite'}")
    store.add_account("alan", "approver", password_hash)
    with TestClient(create_app(build_catalog(run, load_gate_spec(), gov), store, gov)) as client:
        token = client.post("/api/v1/token", json={"name": "alan", "password": PASSWORD}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        view = client.get("/api/v1/items/1", headers=headers).json()
        assert client.post("/api/v1/decisions", headers=headers,
                           json={"token": view["token"], "line": 1, "decision": "approve"}).status_code == 201
        gov.vault.withdraw("tester", actor=Actor("olga", "admin"), reason="changed my mind")
        view = client.get("/api/v1/items/1", headers=headers).json()
        assert view["status"] == "revoked" and not view["can_approve"]
        assert view["decisions"][0]["decision"] == "approve"  # history is not edited
    assert store.export_frames()["decisions"]["decision"].tolist() == ["approve"]
    store.close()


# -- section 5: bad input and abuse ---------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_login_without_a_session(server, path):
    answer = server.client.get(path, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize("method, path", [("get", "/api/v1/ratings/next"), ("post", "/api/v1/ratings"),
                                          ("get", "/api/v1/pairs/next"), ("post", "/api/v1/votes"),
                                          ("get", "/api/v1/items"), ("post", "/api/v1/decisions"),
                                          ("get", "/api/v1/me"), ("get", "/images/1"),
                                          ("get", "/images/1/reference/0")])
def test_the_api_and_images_answer_401_without_a_token(server, method, path):
    before = server.written()
    kwargs = {"json": {"token": "x", "line": 1, "likeness": 1}} if method == "post" else {}
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic cml0YTpwdw=="}):
        answer = getattr(server.client, method)(path, headers=headers, **kwargs)
        assert answer.status_code == 401, (path, headers, answer.text)
    assert server.written() == before


def test_forms_without_the_right_csrf_token_are_403_and_write_nothing(server):
    assert page_login(server.client, "alan").status_code == 303
    page = server.client.get("/rate")
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    line = re.search(r'name="line" value="(\d+)"', page.text).group(1)
    form = {"token": token, "line": line, "likeness": "4", "prompt_fidelity": "4", "quality": "4"}
    before = server.written()
    for csrf in ({}, {"csrf": "0" * 64}):
        assert server.client.post("/rate", data=form | csrf).status_code == 403
        assert server.client.post("/approve/1", data={"decision": "approve", **csrf}).status_code == 403
        assert server.client.post("/vote", data={"outcome": "tie", **csrf}).status_code == 403
    assert server.written() == before
    assert server.client.post("/rate", data=form | {"csrf": csrf_of(page.text)}).status_code == 200  # then /rate
    assert server.written()[0] == before[0] + 1


def test_login_needs_its_csrf_token(server):
    answer = server.client.post("/login", data={"name": "rita", "password": PASSWORD}, follow_redirects=False)
    assert answer.status_code == 403 and "review_session" not in answer.cookies


def test_a_reviewer_calling_an_approver_endpoint_is_403(server):
    rita = server.token("rita")
    before = server.written()
    assert server.client.get("/api/v1/items", headers=rita).status_code == 403
    assert server.client.get("/api/v1/items/1", headers=rita).status_code == 403
    assert server.client.post("/api/v1/decisions", headers=rita, json={
        "token": "x", "line": 1, "decision": "approve"}).status_code == 403
    assert server.client.get("/api/v1/accounts", headers=rita).status_code == 403
    assert server.client.get("/api/v1/accounts", headers=server.token("ada")).status_code == 200
    assert page_login(server.client, "rita").status_code == 303
    assert server.client.get("/approve").status_code == 403
    page = server.client.get("/rate")
    assert server.client.post("/approve/1", data={"csrf": csrf_of(page.text), "decision": "approve"}).status_code == 403
    assert server.written() == before


@pytest.mark.parametrize("change, field", [
    ({"likeness": 0}, "likeness"), ({"quality": 6}, "quality"), ({"prompt_fidelity": "high"}, "prompt_fidelity"),
    ({"likeness": None}, "likeness"), ({"line": 999}, "line"), ({"line": "../../etc/passwd"}, "line"),
    ({"flags": ["sparkly"]}, "flags"), ({"token": "forged"}, "token"), ({"extra": 1}, "extra"),
    ({"other_text": "x" * 3000}, "other_text")])
def test_bad_ratings_are_422_naming_the_field_and_write_nothing(server, change, field):
    rita = server.token("rita")
    task = next_rating(server, rita)
    body = {"token": task["token"], "line": task["item"]["line"], "likeness": 4, "prompt_fidelity": 3,
            "quality": 5} | change
    before = server.written()
    answer = server.client.post("/api/v1/ratings", json=body, headers=rita)
    assert answer.status_code == 422 and field in answer.text, answer.text
    assert server.written() == before


def test_another_images_token_or_line_is_422(server):
    rita = server.token("rita")
    task = next_rating(server, rita)
    other = next(line for line in server.catalog.items if line != task["item"]["line"])
    before = server.written()
    answer = server.client.post("/api/v1/ratings", headers=rita, json={
        "token": task["token"], "line": other, "likeness": 1, "prompt_fidelity": 1, "quality": 1})
    assert answer.status_code == 422 and "line" in answer.text
    rosa = server.token("rosa")
    answer = server.client.post("/api/v1/ratings", headers=rosa, json={
        "token": task["token"], "line": task["item"]["line"], "likeness": 1, "prompt_fidelity": 1, "quality": 1})
    assert answer.status_code == 422 and "another account" in answer.text
    assert server.written() == before


def test_bad_votes_and_decisions_are_422_and_write_nothing(server):
    rita, alan = server.token("rita"), server.token("alan")
    pair = server.client.get("/api/v1/pairs/next", headers=rita).json()
    token = decision_token(server, alan, 1)
    before = server.written()
    cases = [(rita, "/api/v1/votes", {"token": pair["token"], "outcome": "left_much_better"}, "outcome"),
             (rita, "/api/v1/votes", {"token": pair["token"]}, "outcome"),
             (rita, "/api/v1/votes", {"token": token, "outcome": "tie"}, "token"),
             (alan, "/api/v1/decisions", {"token": token, "line": 1, "decision": "reject"}, "reason"),
             (alan, "/api/v1/decisions", {"token": token, "line": 1, "decision": "reject", "reason": "   "}, "reason"),
             (alan, "/api/v1/decisions", {"token": token, "line": 1, "decision": "ship it"}, "decision"),
             (alan, "/api/v1/decisions", {"token": token, "line": 12345, "decision": "approve"}, "line"),
             (alan, "/api/v1/decisions", {"token": pair["token"], "line": 1, "decision": "approve"}, "token")]
    for headers, path, body, field in cases:
        answer = server.client.post(path, json=body, headers=headers)
        assert answer.status_code == 422 and field in answer.text, (body, answer.text)
    assert server.written() == before


@pytest.mark.parametrize("content, content_type", [
    (b"likeness=5", "application/x-www-form-urlencoded"), (b"{not json", "application/json"),
    (b"\xff\xfe\x00", "application/json"), (b"[1, 2]", "application/json"), (b"", "application/json")])
def test_non_json_bodies_are_422(server, content, content_type):
    rita = server.token("rita")
    before = server.written()
    for path in ("/api/v1/ratings", "/api/v1/votes", "/api/v1/token"):
        answer = server.client.post(path, content=content, headers=rita | {"Content-Type": content_type})
        assert answer.status_code == 422, (path, answer.text)
    assert server.written() == before


def test_oversized_bodies_are_422_declared_or_streamed(server):
    rita = server.token("rita")
    before = server.written()
    big = b'{"token": "' + b"x" * 200_000 + b'"}'
    answer = server.client.post("/api/v1/ratings", content=big, headers=rita | {"Content-Type": "application/json"})
    assert answer.status_code == 422 and "body" in answer.text
    streamed = server.client.post("/api/v1/ratings", content=iter([big[:100_000], big[100_000:]]),
                                  headers=rita | {"Content-Type": "application/json"})
    assert streamed.status_code == 422
    assert page_login(server.client, "rita").status_code == 303
    assert server.client.post("/rate", data={"other_text": "x" * 100_000}).status_code == 422
    assert server.written() == before


@pytest.mark.parametrize("path", ["/images/..%2F..%2Fetc%2Fpasswd", "/images/1/reference/..%2F..%2Fmanifest.jsonl",
                                  "/images/%2Fetc%2Fpasswd", "/images/1/reference/7", "/images/0", "/images/-1",
                                  "/images/1/../../etc/passwd", "/images/1?path=/etc/passwd&image=../x",
                                  "/approve/..%2F1", "/images/1e3"])
def test_a_path_in_a_parameter_never_reaches_the_file_system(server, path):
    headers = server.token("alan")
    answer = server.client.get(path, headers=headers)
    assert answer.status_code in (200, 404, 422), (path, answer.status_code)
    assert b"root:" not in answer.content and b'"system"' not in answer.content
    if answer.status_code == 200:  # only "?path=" is ignored: the image of line 1 itself
        assert answer.content == server.catalog.items[1].image.read_bytes()


def test_login_redirects_only_to_this_server(server):
    form = server.client.get("/login?next=//evil.example/x")
    assert "evil" not in form.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    answer = server.client.post("/login", follow_redirects=False, data={
        "name": "rita", "password": PASSWORD, "csrf": csrf, "next": "https://evil.example/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_failed_logins_are_rate_limited_per_account_and_per_client(server):
    for _ in range(3):
        assert server.client.post("/api/v1/token", json={"name": "rosa", "password": "wrong"}).status_code == 401
    blocked = server.client.post("/api/v1/token", json={"name": "rosa", "password": PASSWORD})
    assert blocked.status_code == 429  # even with the right password, until the window passes
    for name in ("nobody1", "nobody2", "nobody3"):
        server.client.post("/api/v1/token", json={"name": name, "password": "wrong"})
    assert server.client.post("/api/v1/token", json={"name": "rita", "password": PASSWORD}).status_code == 429


def test_cookies_are_httponly_samesite_strict_signed_and_expiring(server):
    answer = page_login(server.client, "rita")
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Max-Age=" in cookie
    value = server.client.cookies["review_session"]
    assert server.client.get("/", follow_redirects=False).status_code == 200
    server.client.cookies.clear()
    server.client.cookies.set("review_session", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert server.client.get("/", follow_redirects=False).status_code == 303
    assert answer.headers["location"] == "/"


def test_a_disabled_account_loses_its_session_and_token(server):
    rita = server.token("rita")
    page_login(server.client, "rita")
    server.store.update_account("rita", active=False)
    assert server.client.get("/", follow_redirects=False).status_code == 303
    assert server.client.get("/api/v1/me", headers=rita).status_code == 401


def test_html_in_prompts_systems_reasons_and_account_names_is_rendered_inert(server, password_hash):
    evil = '<img src=x onerror="alert(1)">'
    server.store.add_account(evil, "approver", password_hash)
    assert page_login(server.client, evil).status_code == 303
    page = server.client.get("/approve/2")
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert evil not in page.text and "&lt;img src=x onerror=" in page.text
    reject = server.client.post("/approve/2", data={"csrf": csrf_of(page.text), "token": re.search(
        r'name="token" value="([^"]+)"', page.text).group(1), "decision": "reject", "reason": "<b>bold</b> copy"})
    assert reject.status_code == 200 and "<b>bold</b>" not in reject.text and "&lt;b&gt;bold&lt;/b&gt; copy" in reject.text
    assert "Content-Security-Policy" in reject.headers
    system_page = server.client.get("/approve/4").text
    assert BASE not in system_page and "base&lt;b&gt;v2&lt;/b&gt;" in system_page


def test_bad_form_values_are_422_pages_naming_the_field_and_write_nothing(server):
    assert page_login(server.client, "rita").status_code == 303
    page = server.client.get("/rate")
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    line = re.search(r'name="line" value="(\d+)"', page.text).group(1)
    before = server.written()
    for change, field in (({"likeness": "9"}, "likeness"), ({"line": "abc"}, "line"), ({"quality": ""}, "quality"),
                          ({"line": "999"}, "line")):
        form = {"csrf": csrf_of(page.text), "token": token, "line": line, "likeness": "4", "prompt_fidelity": "4",
                "quality": "4"} | change
        answer = server.client.post("/rate", data=form)
        assert answer.status_code == 422 and field in answer.text and "<h1>422</h1>" in answer.text, change
    assert server.written() == before


def test_the_openapi_schema_is_served(server):
    schema = server.client.get("/openapi.json").json()
    assert {"/api/v1/ratings", "/api/v1/votes", "/api/v1/decisions", "/api/v1/token"} <= set(schema["paths"])


def test_no_body_is_a_500_or_a_write(server):
    headers = server.token("rita")

    @settings(max_examples=40, deadline=None)
    @given(body=st.dictionaries(st.sampled_from(["token", "line", "likeness", "prompt_fidelity", "quality", "flags",
                                                 "skipped", "other_text", "zzz"]),
                                st.one_of(st.none(), st.integers(-10, 10), st.text(max_size=20), st.booleans(),
                                          st.lists(st.text(max_size=8), max_size=3))))
    def check(body):
        before = server.written()
        answer = server.client.post("/api/v1/ratings", json=body, headers=headers)
        assert answer.status_code == 422
        assert server.written() == before

    check()
