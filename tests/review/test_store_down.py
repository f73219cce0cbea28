"""A review store that cannot be reached answers 503 with one line, never 500, and records nothing."""
from fastapi.testclient import TestClient

from eval.review.app import create_app
from eval.review.auth import LoginLimiter
from eval.review.store import ReviewStore

from .conftest import ACCOUNTS, PASSWORD


def test_a_store_that_goes_away_is_503_and_comes_back(signed_run, password_hash, postgres_cluster, postgres_url):
    store = ReviewStore(postgres_url)
    for name, role in ACCOUNTS.items():
        store.add_account(name, role, password_hash)
    app = create_app(signed_run.catalog, store, signed_run.gov, limiter=LoginLimiter(3, 6, 60))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        token = client.post("/api/v1/token", json={"name": "rita", "password": PASSWORD})
        assert token.status_code == 200
        headers = {"Authorization": f"Bearer {token.json()['token']}"}
        entries = len(signed_run.gov.audit_log.entries())
        postgres_cluster.allow_connections(postgres_url, False)
        try:
            answer = client.get("/api/v1/ratings/next", headers=headers)
            assert answer.status_code == 503, answer.text
            message = answer.json()["detail"][0]["msg"]
            assert "review store cannot be reached" in message and "\n" not in message
        finally:
            postgres_cluster.allow_connections(postgres_url, True)
        assert client.get("/api/v1/ratings/next", headers=headers).status_code == 200
        assert len(signed_run.gov.audit_log.entries()) == entries and store.count("rating") == 0
    store.close()
