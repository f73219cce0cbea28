import sqlite3

import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from eval.cache import ResultCache, decode, encode, open_cache, sha256_bytes


@given(
    arrays(np.float32, st.integers(0, 20)),
    st.dictionaries(st.text(min_size=1, max_size=5).filter(lambda k: k != "vector"),
                    st.one_of(st.none(), st.integers(), st.text(max_size=10), st.floats(allow_nan=False)), max_size=4),
)
@settings(max_examples=50, deadline=None)
def test_records_round_trip(vector, extra):
    record = decode(encode({"vector": vector, **extra}))
    assert np.array_equal(record.pop("vector"), vector, equal_nan=True)
    assert record == extra


def test_records_persist_in_a_real_sqlite_file_and_namespaces_are_separate(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = ResultCache(path)
    key = sha256_bytes(b"image bytes")
    cache.put("embed/v1/sface:aaa", key, {"vector": np.arange(4, dtype=np.float32), "label": "happy"})
    cache.close()

    reopened = open_cache(path)
    assert reopened.get("embed/v1/sface:bbb", key) is None  # another model version: a miss
    hit = reopened.get("embed/v1/sface:aaa", key)
    assert hit["label"] == "happy" and hit["vector"].tolist() == [0, 1, 2, 3]
    assert reopened.get_many("embed/v1/sface:aaa", [key, "missing", key]).keys() == {key}
    assert reopened.count("embed/") == 1
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM records_v2").fetchone()[0]
    assert rows == 1


def test_in_memory_cache_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = open_cache(False)
    cache.put("n", "k", {"x": 1})
    assert cache.get("n", "k") == {"x": 1}
    assert list(tmp_path.iterdir()) == []


def test_default_cache_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IDAVATAR_CACHE_DIR", str(tmp_path / "cache"))
    cache = open_cache(None)
    assert cache.path == tmp_path / "cache" / "scores-cache.sqlite"
    assert cache.path.exists()
