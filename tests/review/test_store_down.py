"""A review store that cannot be reached answers 503 with one line, never 500, and records nothing."""
import psycopg
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from eval.review.app import create_app
from eval.review.auth import LoginLimiter
from eval.review.store import ReviewStore

from .conftest import ACCOUNTS, PASSWORD


def _connections(url: str, allowed: bool) -> None:
    parts = make_url(url)
    with psycopg.connect(host=parts.host, port=parts.port, user=parts.username, password=parts.password,
                         dbname="postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{parts.database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (parts.database,))


def test_a_store_that_goes_away_is_503_and_comes_back(signed_run, password_hash, postgres_url):
    store = ReviewStore(postgres_url)
    for name, role in ACCOUNTS.items():
        store.add_account(name, role, password_hash)
    app = create_app(signed_run.catalog, store, signed_run.gov, limiter=LoginLimiter(3, 6, 60))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        token = client.post("/api/v1/token", json={"name": "rita", "password": PASSWORD})
        assert token.status_code == 200
        headers = {"Authorization": f"Bearer {token.json()['token']}"}
        entries = len(signed_run.gov.audit_log.entries())
        _connections(postgres_url, allowed=False)
        try:
            answer = client.get("/api/v1/ratings/next", headers=headers)
            assert answer.status_code == 503, answer.text
            message = answer.json()["detail"][0]["msg"]
            assert "review store cannot be reached" in message and "\n" not in message
        finally:
            _connections(postgres_url, allowed=True)
        assert client.get("/api/v1/ratings/next", headers=headers).status_code == 200
        assert len(signed_run.gov.audit_log.entries()) == entries and store.count("rating") == 0
    store.close()
