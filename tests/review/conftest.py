"""A signed, consenting run for the review app, built like the sampler builds one, from real photos.

Subject "tester" consented to avatar generation and evaluation. The sampler's actor "sampler-sam"
C2PA-signs each output through governance (`sign_output`, audited). System "cand": line 1 a new photo
of the person (approvable), line 2 a near copy of the reference (flagged by the copy-paste rule),
line 3 the same photo left unsigned (no C2PA manifest). System BASE (a name with HTML in it): lines 4-5, so (cand, BASE)
has A/B pairs on seeds 0 and 1. Scored for real by the harness (face models, cache).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from eval.report.gates import load_gate_spec
from eval.report.run import ReviewRun
from eval.review.app import create_app
from eval.review.auth import LoginLimiter, hash_password
from eval.review.catalog import Catalog, build_catalog, load_review_run
from eval.review.store import ReviewStore
from governance import Actor, GovernanceContext, Purpose, new_record

PHOTOS = Path(__file__).resolve().parents[2] / "eval" / "demo" / "faces"
SAMPLER = "sampler-sam"
BASE = "base<b>v2</b>"
PASSWORD = "correct horse battery staple"
ACCOUNTS = {"rita": "reviewer", "rosa": "reviewer", "alan": "approver", SAMPLER: "approver", "ada": "admin"}


def _png(photo: Path, dest: Path, crop: bool = False) -> Path:
    with Image.open(photo) as image:
        image = image.convert("RGB")
        if crop:
            w, h = image.size
            image = image.crop((int(0.04 * w), int(0.03 * h), int(0.97 * w), int(0.98 * h)))
        dest.parent.mkdir(parents=True, exist_ok=True)
        image.save(dest)
    return dest


def build_signed_run(folder: Path, gov: GovernanceContext | None = None) -> tuple[Path, GovernanceContext]:
    """The run in ``folder``/out, signed through ``gov`` (default: a new workspace in ``folder``/gov)."""
    gov = gov or GovernanceContext.init(folder / "gov", controller="Test Avatars Ltd")
    record = gov.record_consent(new_record("tester", [Purpose.AVATAR_GENERATION, Purpose.EVALUATION],
                                           controller="Test Avatars Ltd", jurisdiction="EU", actor="olga"),
                                actor=Actor("olga", "admin"))
    run = folder / "out"
    (run / "refs").mkdir(parents=True)
    reference = "refs/tester.jpg"
    (run / reference).write_bytes((PHOTOS / "ardern_2018.jpg").read_bytes())
    sampler = Actor(SAMPLER, "operator")
    outputs = [("cand", 0, "ardern_2022.jpg", False, True), ("cand", 1, "ardern_2018.jpg", True, True),
               ("cand", 2, "ardern_2022.jpg", False, False), (BASE, 0, "ardern_2018.jpg", True, True),
               (BASE, 1, "ardern_2022.jpg", False, True)]
    lines = []
    for index, (system, seed, photo, crop, signed) in enumerate(outputs):
        image = run / "images" / f"tester_{index:04d}.png"
        if signed:
            partial = _png(PHOTOS / photo, image.with_suffix(".unsigned.png"), crop)
            gov.sign_output(partial, subject="tester", consent_record_id=record.record_id, generator="idadapter",
                            model_version="0.1.0", actor=sampler, dest=image)
            partial.unlink()
        else:
            _png(PHOTOS / photo, image, crop)
        lines.append(json.dumps({"system": system, "subject": "tester", "references": [reference],
                                 "prompt": "a photo of a woman <script>alert(1)</script>", "prompt_category": "identity",
                                 "seed": seed, "image": image.relative_to(run).as_posix(),
                                 "generator": {"name": "idadapter", "version": "0.1.0"}}))
    (run / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return run / "manifest.jsonl", gov


@dataclass
class SignedRun:
    manifest: Path
    gov: GovernanceContext
    run: ReviewRun
    catalog: Catalog


@pytest.fixture(scope="session")
def signed_run(tmp_path_factory) -> SignedRun:
    manifest, gov = build_signed_run(tmp_path_factory.mktemp("signed-run"))
    run = load_review_run(manifest, progress=False)
    return SignedRun(manifest, gov, run, build_catalog(run, load_gate_spec(), gov))


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)


@dataclass
class Server:
    client: TestClient
    store: ReviewStore
    gov: GovernanceContext
    catalog: Catalog

    def token(self, name: str) -> dict:
        answer = self.client.post("/api/v1/token", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    def written(self) -> tuple[int, int, int, int]:
        """(ratings, votes, decisions, audit entries): what a refused request must leave unchanged."""
        return (self.store.count("rating"), self.store.count("vote"), self.store.count("decision"),
                len(self.gov.audit_log.entries()))


@pytest.fixture
def server(signed_run, password_hash, tmp_path) -> Server:
    store = ReviewStore(f"sqlite:///{tmp_path / 'review.sqlite'}")
    for name, role in ACCOUNTS.items():
        store.add_account(name, role, password_hash)
    app = create_app(signed_run.catalog, store, signed_run.gov, limiter=LoginLimiter(3, 6, 60))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Server(client, store, signed_run.gov, signed_run.catalog)
    store.close()
