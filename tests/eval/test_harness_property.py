"""Property: on any manifest and any files, `eval.score` then `eval.report` (real subprocesses, real
models) exit 0, 1 or 2, never print a traceback, account for every manifest line (scored, or
skipped with its line number), and leave either no outputs or one consistent set.

`make test` runs a few examples; the long profile runs many:
    IDAVATAR_PROPERTY_EXAMPLES=100 pytest tests/eval/test_harness_property.py -m slow
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from PIL import Image

from eval.outputs import read_scores_set

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("IDAVATAR_PROPERTY_EXAMPLES", "3"))
FILE_KINDS = ["photo", "random", "empty", "fifo", "link", "loop", "outside", "folder", "strip", "tiny", "nan"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
path_values = st.sampled_from([f"f{i}.png" for i in range(len(FILE_KINDS))] + ["missing.png", "../up.png", "/abs.png", ""])


@st.composite
def manifest_lines(draw) -> bytes:
    kind = draw(st.sampled_from(["entry", "entry", "entry", "entry", "bytes", "json"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40)).replace(b"\n", b" ")
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    entry = {"system": draw(st.sampled_from(["a", "b"])), "subject": "macron",
             "references": draw(st.lists(path_values, min_size=1, max_size=2)),
             "prompt": draw(st.sampled_from(["NA", "null", "1", "a photo", ""]) | st.text(max_size=10)),
             "prompt_category": draw(st.sampled_from(["identity", "style"])),
             "seed": draw(st.integers(0, 2**31) | st.none()), "image": draw(path_values)}
    fault = draw(st.sampled_from(["none", "none", "none", "value", "missing"]))  # most entries are valid
    if fault == "value":
        entry[draw(st.sampled_from(list(entry)))] = draw(json_values)
    elif fault == "missing":
        del entry[draw(st.sampled_from(list(entry)))]
    return json.dumps(entry).encode()


def _make_file(run: Path, name: str, kind: str, photo: Path, data: bytes) -> None:
    path = run / name
    if kind == "photo":
        shutil.copyfile(photo, path)
    elif kind in ("random", "empty"):
        path.write_bytes(data if kind == "random" else b"")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link":
        path.symlink_to(photo)  # resolves outside the run folder: refused
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "outside":
        path.symlink_to(run.parent / "elsewhere.png")
    elif kind == "folder":
        path.mkdir()
    elif kind == "strip":
        Image.new("RGB", (4000, 2)).save(path)
    elif kind == "tiny":
        Image.new("RGB", (1, 1)).save(path)
    else:
        Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F").save(path.with_suffix(".tif"), format="TIFF")
        path.with_suffix(".tif").rename(path)


def _run(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "IDAVATAR_CLIP": str(cwd / "no-clip")})


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(manifest_lines(), max_size=6), files=st.lists(st.sampled_from(FILE_KINDS), min_size=len(FILE_KINDS),
                                                                 max_size=len(FILE_KINDS)),
       data=st.binary(min_size=1, max_size=64))
def test_any_manifest_and_files_give_a_clean_exit_and_one_consistent_set(tmp_path_factory, faces_dir, lines, files,
                                                                       data):
    root = tmp_path_factory.mktemp("property")
    run = root / "run"
    run.mkdir()
    shutil.copyfile(faces_dir / "macron_2014.jpg", root / "elsewhere.png")
    for index, kind in enumerate(files):
        _make_file(run, f"f{index}.png", kind, faces_dir / "macron_2014.jpg", data)
    (run / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    scored = _run("eval.score", str(run / "manifest.jsonl"), "--cache", str(root.parent / "property-cache.sqlite"),
                  "--quiet", "--recognizers", "sface", cwd=root)
    assert scored.returncode in (0, 1, 2) and "Traceback" not in scored.stderr, scored.stderr
    event(f"eval.score exit {scored.returncode}")  # --hypothesis-show-statistics shows the mix
    numbered = {n for n, line in enumerate(lines, start=1) if line.strip()}
    skipped = {n for n in numbered if f"line {n}: " in scored.stderr}
    out = run / "scores"
    if scored.returncode == 0:
        scores, summary = read_scores_set(out)
        assert set(scores["line"]) | skipped == numbered and not set(scores["line"]) & skipped
        assert {e["line"] for e in summary["manifest_errors"]} == skipped
        reported = _run("eval.report", str(out), "--out", str(root / "r.html"), "--system", str(scores["system"][0]),
                        cwd=root)
        assert reported.returncode in (0, 1, 2) and "Traceback" not in reported.stderr, reported.stderr
    else:
        assert skipped == numbered and not (out / "summary.json").exists()
