"""The result cache is a shortcut, never a failure or a wrong answer: a broken file is set aside and
rebuilt (the warning says where), an undecodable record is a miss, an image replaced while the run
reads it is never cached under the old bytes' hash, and a killed run keeps every committed chunk."""
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageOps

from eval.cache import ResultCache, encode
from eval.faces import FaceInputError
from eval.files import sha256_file
from eval.scoring.analysis import CachedFaceAnalysis, ImageChanged, LocalFaceEngine, Miss, verified_pixels

RECORD = {"vector": np.arange(3, dtype=np.float32), "label": "x"}


def _real_database(path):
    cache = ResultCache(path)
    cache.put("n", "k", RECORD)
    cache.close()
    return path


def _random_bytes(path):
    path.write_bytes(os.urandom(8192))


def _truncated(path):
    _real_database(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] + b"\0" * 7)


def _flipped_pages(path):
    _real_database(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    data = bytearray(path.read_bytes())
    for offset in range(100, len(data), 97):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _wrong_schema(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE records_v2 (key TEXT, blob BLOB)")
    db.commit()
    db.close()


def _folder(path):
    path.mkdir()
    (path / "inside.txt").write_text("a folder where the cache file should be")


@pytest.mark.parametrize("damage", [_random_bytes, _truncated, _flipped_pages, _wrong_schema, _folder])
def test_a_broken_cache_file_is_set_aside_named_and_rebuilt(tmp_path, capsys, damage):
    path = tmp_path / "scores-cache.sqlite"
    damage(path)
    cache = ResultCache(path)
    cache.put("n", "k", RECORD)
    assert cache.get("n", "k")["label"] == "x"
    err = capsys.readouterr().err
    aside = [p for p in tmp_path.iterdir() if ".broken-" in p.name]
    assert len(aside) == 1 and str(path) in err and str(aside[0]) in err
    assert ResultCache(path).count() == 1  # the new file is a working cache


def test_an_undecodable_record_is_a_miss_and_is_overwritten(tmp_path, capsys):
    path = _real_database(tmp_path / "c.sqlite")
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO records_v2 VALUES ('n', 'bad', ?)", (b"\x10\x00\x00\x00{not json",))
        db.execute("INSERT INTO records_v2 VALUES ('n', 'short', ?)", (encode(RECORD)[:-2],))
        db.execute("INSERT INTO records_v2 VALUES ('n', 'text', 'a string, not a blob')")
    cache = ResultCache(path)
    assert set(cache.get_many("n", ["k", "bad", "short", "text"])) == {"k"}
    assert str(path) in capsys.readouterr().err
    cache.put("n", "bad", RECORD)
    assert cache.get("n", "bad")["label"] == "x"


@pytest.fixture()
def immutable(tmp_path):
    """`immutable(path)`: make `path` unwritable even for root (chattr +i), undone after the test."""
    made = []

    def make(path):
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("chattr +i is not available here")
        made.append(path)

    yield make
    for path in reversed(made):
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_cache_keeps_results_in_memory_and_names_the_file(tmp_path, capsys, immutable):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = _real_database(folder / "c.sqlite")
    immutable(path)
    immutable(folder)
    cache = ResultCache(path)
    cache.put("n", "k2", RECORD)
    assert cache.get("n", "k2")["label"] == "x" and cache.path is None
    err = capsys.readouterr().err
    assert str(path) in err and "in memory" in err


def test_misses_are_decoded_from_the_bytes_that_were_hashed(tmp_path, faces_dir):
    image = tmp_path / "a.jpg"
    shutil.copyfile(faces_dir / "macron_2014.jpg", image)
    miss = Miss(image, sha256_file(image))
    assert verified_pixels(miss).shape[2] == 3
    shutil.copyfile(faces_dir / "sunak.jpg", image)  # replaced after hashing
    with pytest.raises(ImageChanged, match="changed while the run was scoring it"):
        verified_pixels(miss)
    image.unlink()
    with pytest.raises(ImageChanged):
        verified_pixels(miss)
    (tmp_path / "b.png").write_bytes(b"not an image")
    with pytest.raises(FaceInputError) as raised:  # a property of the bytes: not ImageChanged, so cacheable
        verified_pixels(Miss(tmp_path / "b.png", sha256_file(tmp_path / "b.png")))
    assert not isinstance(raised.value, ImageChanged)


class ReplacesBeforeAnalysis(LocalFaceEngine):
    """The real engine, with the race made certain: each image is replaced just before it is read."""

    def __init__(self, analyzer, replacement):
        super().__init__(analyzer)
        self.replacement = replacement

    def analyze(self, misses):
        for miss in misses:
            shutil.copyfile(self.replacement, miss.path)
        return super().analyze(misses)


def test_an_image_replaced_during_the_run_is_not_cached_under_the_old_hash(tmp_path, faces_dir, eval_analyzer):
    image = tmp_path / "a.png"
    ImageOps.mirror(Image.open(faces_dir / "macron_2014.jpg")).save(image)  # bytes no cache has seen
    old_hash = sha256_file(image)
    cache = ResultCache(tmp_path / "c.sqlite")
    faces = CachedFaceAnalysis(eval_analyzer, cache, ReplacesBeforeAnalysis(eval_analyzer, faces_dir / "sunak.jpg"))
    record = faces.analyze([image])[image]
    assert not record.readable and "changed while the run was scoring it" in record.error
    assert cache.get(faces.faces_namespace, old_hash) is None
    again = CachedFaceAnalysis(eval_analyzer, cache).analyze([image])[image]  # the new bytes, scored for real
    assert again.has_face and again.sha256 == sha256_file(faces_dir / "sunak.jpg")


KILLED_RUN = """
import sys
from eval.scoring import analysis
analysis.CACHE_CHUNK = 2
from eval.score import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_killed_run_keeps_its_committed_chunks_and_the_rerun_resumes(demo_manifest, tmp_path, eval_analyzer,
                                                                       hide_optional_weights):
    cache_path = tmp_path / "cache.sqlite"
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(demo_manifest), "--out", str(tmp_path / "out"),
                                "--cache", str(cache_path), "--quiet", "--recognizers", "sface,dlib"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TORCH_HOME": str(hide_optional_weights.folder / "torch")})
    faces_namespace = CachedFaceAnalysis(eval_analyzer, ResultCache(None)).faces_namespace
    deadline = time.monotonic() + 240
    committed = 0
    while committed < 4 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        if cache_path.exists():
            try:
                with sqlite3.connect(f"file:{cache_path}?mode=ro", uri=True, timeout=5) as db:
                    committed = db.execute("SELECT COUNT(*) FROM records_v2 WHERE namespace = ?",
                                           (faces_namespace,)).fetchone()[0]
            except sqlite3.OperationalError:
                pass
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with sqlite3.connect(cache_path) as db:
        kept, crops = (db.execute("SELECT COUNT(*) FROM records_v2 WHERE namespace = ?", (namespace,)).fetchone()[0]
                       for namespace in (faces_namespace, f"{faces_namespace}/crop"))
    assert 4 <= kept < 22 and crops == kept  # whole chunks of 2 survived the kill, each face with its crop
    before = Counter(eval_analyzer.calls)
    CachedFaceAnalysis(eval_analyzer, ResultCache(cache_path)).analyze(
        [demo_manifest.parent / line for line in _demo_images(demo_manifest)])
    assert (Counter(eval_analyzer.calls) - before)["analyze"] == 22 - kept


def _demo_images(manifest):
    from eval.manifest import read_manifest

    entries = read_manifest(manifest).entries
    return list(dict.fromkeys([e.image for e in entries] + [r for e in entries for r in e.references]))
