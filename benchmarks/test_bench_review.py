"""The review app under load: 20 concurrent API clients submit 2,000 blind ratings to the real server.

    pytest benchmarks/test_bench_review.py -m benchmark -s

A real uvicorn server (`python -m eval.review serve`, subprocess) on a run of 100 images made from
the bundled photos; 20 reviewer accounts, one httpx client each, each rating all 100 images
(GET /api/v1/ratings/next, then POST /api/v1/ratings). Reported: throughput, p50/p95 latency of the
submission, and rows = submitted = audit entries (0 lost). The reference in the same run is one
client alone, so the concurrency ratio survives a busy machine. Results: benchmarks/results/review_cpu.json.
"""
from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

from eval.review.auth import hash_password
from eval.review.store import ReviewStore
from governance import GovernanceContext
from tests.review.servers import review_server

FACES = Path(__file__).resolve().parents[1] / "eval" / "demo" / "faces"
RESULTS = Path(__file__).parent / "results" / "review_cpu.json"
CLIENTS = 20
IMAGES = 100
SOLO = 100
PASSWORD = "benchmark password"


def build_run(folder: Path) -> Path:
    """100 manifest lines over the 10 bundled photos (two systems, 50 seeds): scored once, then cached."""
    photos = sorted(FACES.glob("*.jpg"))
    (folder / "photos").mkdir(parents=True)
    for photo in photos:
        (folder / "photos" / photo.name).write_bytes(photo.read_bytes())
    lines = []
    for index in range(IMAGES):
        photo, reference = photos[index % len(photos)], photos[(index + 1) % len(photos)]
        lines.append(json.dumps({"system": "ab"[index % 2], "subject": reference.stem.split("_")[0],
                                 "references": [f"photos/{reference.name}"], "prompt": "a photo of a person",
                                 "prompt_category": "identity", "seed": index // 2, "image": f"photos/{photo.name}"}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def reviewer(url: str, name: str, limit: int, latencies: list[float], submitted: list[int], errors: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        token = client.post("/api/v1/token", json={"name": name, "password": PASSWORD}).json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        for _ in range(limit):
            task = client.get("/api/v1/ratings/next").json()
            if task["done"]:
                break
            started = time.perf_counter()
            answer = client.post("/api/v1/ratings", json={"token": task["token"], "line": task["item"]["line"],
                                                          "likeness": 4, "prompt_fidelity": 3, "quality": 4})
            latencies.append(time.perf_counter() - started)
            if answer.status_code == 201:
                submitted.append(1)
            else:
                errors.append(f"{name}: {answer.status_code} {answer.text[:200]}")


def run_clients(url: str, names: list[str], limit: int) -> dict:
    latencies, submitted, errors = [], [], []
    threads = [threading.Thread(target=reviewer, args=(url, name, limit, latencies, submitted, errors))
               for name in names]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"clients": len(names), "submitted": len(submitted), "errors": errors[:5], "wall_s": round(wall, 2),
            "ratings_per_s": round(len(submitted) / wall, 1),
            "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1)}


@pytest.mark.benchmark
def test_20_clients_submit_2000_ratings_none_lost(tmp_path):
    manifest = build_run(tmp_path / "run")
    gov = GovernanceContext.init(tmp_path / "gov")
    database = tmp_path / "review.sqlite"
    store = ReviewStore(f"sqlite:///{database}")
    password_hash = hash_password(PASSWORD)
    names = [f"reviewer{i:02d}" for i in range(CLIENTS)]
    for name in names + ["solo"]:
        store.add_account(name, "reviewer", password_hash)
    store.close()
    with review_server("serve", str(manifest), "--workspace", str(tmp_path / "gov" / "governance.toml"),
                       "--database", f"sqlite:///{database}", "--ratings-per-image", str(CLIENTS + 1)) as server:
        solo = run_clients(server.url, ["solo"], SOLO)
        concurrent = run_clients(server.url, names, IMAGES)
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT count(*) FROM review_ratings WHERE reviewer != 'solo'").fetchone()[0]
        unaudited = connection.execute("SELECT count(*) FROM review_ratings WHERE audit_seq IS NULL").fetchone()[0]
    entries = [e for e in gov.audit_log.entries() if e["action"] == "review.rating" and e["actor"] != "solo"]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "solo": solo, "concurrent": concurrent,
        "concurrency_speedup": round(concurrent["ratings_per_s"] / solo["ratings_per_s"], 2),
        "rows": rows, "audit_entries": len(entries), "unaudited_rows": unaudited,
        "lost": concurrent["submitted"] - min(rows, len(entries)),
        "audit_log_verifies": gov.verify_audit_log().ok,
    }
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    assert concurrent["errors"] == [] and concurrent["submitted"] == CLIENTS * IMAGES
    assert rows == len(entries) == concurrent["submitted"] and unaudited == 0 and result["audit_log_verifies"]
