"""Shared stores: audit appends/s and consent checks/s with 4 writer processes, PostgreSQL vs files.

    pytest benchmarks/test_bench_stores.py -m benchmark -s

One workspace per backend: the embedded default (audit log a JSONL file under flock, consent
registry a SQLite file) and one PostgreSQL database for both (a throw-away local cluster started
as the tests start theirs, ``tests.conftest.PostgresCluster``). 4 real processes start together on an event; each appends signed
audit entries, then checks consent of seeded subjects (``registry.check``, the gate's read).
Reported: aggregate operations per second over the wall time of all 4, per backend, and the
PostgreSQL/file ratio measured in the same run. Results: benchmarks/results/stores_cpu.json.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from pathlib import Path

import pytest

from governance import GovernanceContext, Purpose, new_record
from tests.conftest import PostgresCluster

RESULTS = Path(__file__).parent / "results" / "stores_cpu.json"
WRITERS = 4
APPENDS = 150
CHECKS = 400
SUBJECTS = 20


def _workspace(folder: Path, url: str | None) -> Path:
    gov = GovernanceContext.init(folder)
    config = folder / "governance.toml"
    if url:
        text = config.read_text().replace('registry = "consent.sqlite"', f'registry = "{url}"')
        config.write_text(text.replace('audit_log = "audit/audit.jsonl"', f'audit_log = "{url}"'))
        gov = GovernanceContext.load(config)
    for index in range(SUBJECTS):
        gov.registry.add(new_record(f"s{index}", [Purpose.EVALUATION], controller="C", jurisdiction="EU",
                                    actor="bench"))
    return config


def _writer(config: str, worker: int, start, ends) -> None:
    gov = GovernanceContext.load(config)
    gov.registry.check("s0", Purpose.EVALUATION)  # connected and warm before the clock starts
    start.wait()
    for index in range(APPENDS):
        gov.audit_log.append(actor=f"w{worker}", action="bench.append", object=str(index))
    appended = time.time()
    for index in range(CHECKS):
        assert gov.registry.check(f"s{index % SUBJECTS}", Purpose.EVALUATION).allowed
    ends.put((appended, time.time()))


def _measure(config: Path) -> dict:
    context = multiprocessing.get_context("spawn")
    start, ends = context.Event(), context.Queue()
    writers = [context.Process(target=_writer, args=(str(config), worker, start, ends)) for worker in range(WRITERS)]
    for writer in writers:
        writer.start()
    time.sleep(8)  # let every writer import and connect
    began = time.time()
    start.set()
    finished = [ends.get(timeout=600) for _ in writers]
    for writer in writers:
        writer.join(60)
    assert [writer.exitcode for writer in writers] == [0] * WRITERS
    appends_done = max(appended for appended, _ in finished)
    gov = GovernanceContext.load(config)
    assert sum(entry["action"] == "bench.append" for entry in gov.audit_log.entries()) == WRITERS * APPENDS
    assert gov.audit_log.verify(allow_unchecked_tail=WRITERS * APPENDS).ok
    checks_time = max(end for _, end in finished) - min(appended for appended, _ in finished)
    return {"audit_appends_per_s": round(WRITERS * APPENDS / (appends_done - began), 1),
            "consent_checks_per_s": round(WRITERS * CHECKS / checks_time, 1)}


@pytest.mark.benchmark
def test_stores_with_four_writers(tmp_path):
    files = _measure(_workspace(tmp_path / "files", None))
    cluster = PostgresCluster().start()
    try:
        postgres = _measure(_workspace(tmp_path / "pg", cluster.create_database("bench_stores")))
    finally:
        cluster.stop()
    result = {
        "writers": WRITERS, "appends_per_writer": APPENDS, "checks_per_writer": CHECKS,
        "files_and_sqlite": files, "postgresql": postgres,
        "ratio_postgresql_over_files": {key: round(postgres[key] / files[key], 2) for key in files},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
