"""Governance throughput: C2PA signing, audit-log appends, vault put/read.

    pytest benchmarks/test_bench_governance.py -m benchmark -s

Goals: >= 300 images signed per second at 512x512 with the thumbnail off; >= 1,500 audit appends per
second with fsync under 4 concurrent writers. Each figure comes with its reference in the same run
(thumbnail on, one writer, raw AES-GCM), so the ratios survive a busy machine. The figures are
printed (run with -s); docs/governance.md quotes them with the load average of the run.
"""
import datetime as dt
import json
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from PIL import Image

from governance import Actor, GovernanceContext, Purpose, new_record
from governance.audit_log import AuditLog, load_private_key
from governance.pki import init_test_pki
from governance.provenance import ImageSigner, SigningIdentity

FACES = Path(__file__).resolve().parents[1] / "eval" / "demo" / "faces"
MACHINE = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def face_pngs(folder: Path, size: int = 512) -> list[Path]:
    """The bundled photos as 512x512 PNGs: realistic content, realistic PNG sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for photo in sorted(FACES.glob("*.jpg")):
        path = folder / f"{photo.stem}.png"
        Image.open(photo).convert("RGB").resize((size, size)).save(path)
        paths.append(path)
    return paths


def _sign_batch(cert: str, key: str, sources: list[str], out_dir: str, thumbnail: bool) -> int:
    signer = ImageSigner(SigningIdentity.from_files(cert, key), thumbnail=thumbnail)
    for i, source in enumerate(sources):
        signer.sign(source, Path(out_dir) / f"{i:05d}.png", generator="idadapter", model_version="bench",
                    consent_record_id="urn:uuid:00000000-0000-4000-8000-000000000000")
    return len(sources)


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def _cpu_timed(function, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time does not depend on the machine's load."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


@pytest.mark.benchmark
def test_signing_throughput(tmp_path):
    pki = init_test_pki(tmp_path / "pki")
    sources = [str(p) for p in face_pngs(tmp_path / "src")]
    cert, key = str(pki.signing_cert), str(pki.signing_key)
    n, n_thumb, workers = 300, 30, os.cpu_count() or 1
    batch = (sources * (n // len(sources) + 1))[:n]
    _sign_batch(cert, key, sources[:2], str(tmp_path), False)  # warm-up
    (tmp_path / "one").mkdir()
    (tmp_path / "thumb").mkdir()
    one, one_cpu = _cpu_timed(_sign_batch, cert, key, batch, str(tmp_path / "one"), False)
    thumb = _timed(_sign_batch, cert, key, batch[:n_thumb], str(tmp_path / "thumb"), True)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_sign_batch, [cert] * workers, [key] * workers, [sources[:1]] * workers,  # start workers
                      [str(tmp_path)] * workers, [False] * workers))
        folders = [tmp_path / f"pool{w}" for w in range(workers)]
        for folder in folders:
            folder.mkdir()
        start = time.perf_counter()
        list(pool.map(_sign_batch, [cert] * workers, [key] * workers, [batch[w::workers] for w in range(workers)],
                      map(str, folders), [False] * workers))
        parallel = time.perf_counter() - start
    unsigned = sum(os.path.getsize(s) for s in batch[:n_thumb])
    report = {
        "machine": MACHINE, "load_average": os.getloadavg()[0], "images": n,
        "image": "512x512 PNG (bundled photos, resized)",
        "thumbnail_off_images_per_s": round(n / one, 1),
        "thumbnail_off_ms_per_image": round(1000 * one / n, 2),
        "thumbnail_off_cpu_ms_per_image": round(1000 * one_cpu / n, 2),
        f"thumbnail_off_{workers}_processes_images_per_s": round(n / parallel, 1),
        "thumbnail_on_ms_per_image": round(1000 * thumb / n_thumb, 2),
        "thumbnail_on_size_ratio": round(sum(p.stat().st_size for p in (tmp_path / "thumb").iterdir()) / unsigned, 2),
        "thumbnail_off_size_ratio": round(sum(os.path.getsize(tmp_path / "one" / f"{i:05d}.png")
                                              for i in range(n_thumb)) / unsigned, 3),
        "goal_images_per_s": 300,
    }
    print(json.dumps(report, indent=2))
    assert len(list((tmp_path / "one").iterdir())) == n


def _append(path: str, key: str, count: int, writer: int, fsync: bool = True) -> None:
    log = AuditLog(path, signing_key=load_private_key(key), fsync=fsync)
    for i in range(count):
        log.append(actor=f"writer-{writer}", role="operator", action="bench.append", subject="alice", object=str(i))


@pytest.mark.benchmark
def test_audit_append_throughput(tmp_path):
    gov = GovernanceContext.init(tmp_path / "gov")
    key = str(gov.config.audit_key)
    per_writer, writers = 500, 4
    single = _timed(_append, str(tmp_path / "single.jsonl"), key, per_writer, 0)
    no_fsync = _timed(_append, str(tmp_path / "no-fsync.jsonl"), key, per_writer, 0, False)
    fsync_s = _timed(_raw_fsyncs, tmp_path / "raw.bin", per_writer) / per_writer
    path = str(tmp_path / "concurrent.jsonl")
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append, args=(path, key, per_writer, w)) for w in range(writers)]
    # Time from the first append to the last: process start-up (imports) is not an append.
    AuditLog(path, signing_key=load_private_key(key)).append(actor="bench", action="bench.start")
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    entries = AuditLog(path, public_key=load_private_key(key).public_key()).entries()
    first = next(e for e in entries if e["actor"] != "bench")
    span = (_parse(entries[-1]["time"]) - _parse(first["time"]))
    verified = AuditLog(path, public_key=load_private_key(key).public_key()).verify()
    report = {
        "machine": MACHINE, "load_average": os.getloadavg()[0], "fsync": True, "checkpoint_every": 256,
        "one_writer_appends_per_s": round(per_writer / single, 1),
        "one_writer_no_fsync_appends_per_s": round(per_writer / no_fsync, 1),
        "raw_write_fsync_ms": round(1000 * fsync_s, 3),
        # Each writer waits for its own flush, so 4 writers cannot beat 4 appends per flush.
        f"{writers}_writers_fsync_bound_per_s": round(writers / fsync_s, 1),
        f"{writers}_writers_appends_per_s": round((len(entries) - 2) / span, 1),
        "entries": len(entries), "verified": verified.ok, "goal_appends_per_s": 1500,
    }
    print(json.dumps(report, indent=2))
    assert verified.ok and len(entries) == writers * per_writer + 1


def _raw_fsyncs(path: Path, count: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for _ in range(count):
            os.write(fd, b"x" * 400 + b"\n")
            os.fsync(fd)
    finally:
        os.close(fd)


def _parse(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp).timestamp()


@pytest.mark.benchmark
def test_vault_throughput(tmp_path):
    gov = GovernanceContext.init(tmp_path / "gov")
    gov.registry.add(new_record("alice", [Purpose.EVALUATION], controller="C", jurisdiction="EU", actor="bench"))
    operator = Actor("bench", "operator")
    photos = [p.read_bytes() for p in sorted(FACES.glob("*.jpg"))] * 5
    megabytes = sum(map(len, photos)) / 1e6
    start = time.perf_counter()
    ids = [gov.vault.put("alice", photo, purpose="evaluation", actor=operator) for photo in photos]
    put = time.perf_counter() - start
    start = time.perf_counter()
    for file_id in ids:
        gov.vault.read("alice", file_id, purpose="evaluation", actor=operator)
    read = time.perf_counter() - start
    aead, nonce = AESGCM(AESGCM.generate_key(bit_length=256)), os.urandom(12)
    raw = _timed(lambda: [aead.encrypt(nonce, photo, b"") for photo in photos])
    report = {
        "machine": MACHINE, "load_average": os.getloadavg()[0], "photos": len(photos), "megabytes": round(megabytes, 2),
        "put_mb_per_s": round(megabytes / put, 1), "read_mb_per_s": round(megabytes / read, 1),
        "put_photos_per_s": round(len(photos) / put, 1), "read_photos_per_s": round(len(photos) / read, 1),
        "raw_aes_gcm_mb_per_s": round(megabytes / raw, 1),
        "note": "put/read include the consent check (SQLite), one fsynced audit entry and an fsynced blob write",
    }
    print(json.dumps(report, indent=2))
    assert len(ids) == len(photos)
