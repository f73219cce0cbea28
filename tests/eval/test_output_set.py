"""A run's outputs are one set: every reader (eval.report, eval.compare, the gates) refuses a folder
whose files come from different runs, and a second run into a busy folder is refused."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from eval.compare import compare_scores
from eval.manifest import read_manifest, write_manifest
from eval.outputs import LOCK_FILE, OutputSetError, locked_out_dir, read_scores_set
from eval.report.run import RunError, load_run
from eval.score import main as score_main, score_manifest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_runs(demo_manifest, eval_analyzer, score_cache, tmp_path_factory, hide_optional_weights):
    """The demo run and a run of only its 'ideal' lines, scored (from the cache) into two folders."""
    folder = tmp_path_factory.mktemp("two-runs")
    manifest = read_manifest(demo_manifest)
    ideal = write_manifest(demo_manifest.parent / "ideal-only.jsonl", [e for e in manifest.entries if e.system == "ideal"])
    with hide_optional_weights():
        full = score_manifest(demo_manifest, folder / "full", analyzer=eval_analyzer, cache=score_cache, progress=False)
        part = score_manifest(ideal, folder / "part", analyzer=eval_analyzer, cache=score_cache, progress=False)
    return full, part


def _torn_copy(full, part, tmp_path, name):
    """`full`'s folder with `part`'s `name` in place: what a kill between two renames leaves."""
    torn = tmp_path / "torn"
    shutil.copytree(full.out_dir, torn)
    shutil.copyfile(part.out_dir / name, torn / name)
    return torn


def test_every_file_carries_the_same_run_id(two_runs):
    full, part = two_runs
    scores, summary = read_scores_set(full.out_dir)
    assert set(scores["run_id"]) == {summary["run_id"]} == set(pd.read_csv(full.csv_path)["run_id"])
    assert summary["run_id"] != part.summary["run_id"]
    assert not [p for p in full.out_dir.iterdir() if p.name.startswith(".staging")]


@pytest.mark.parametrize("name", ["scores.parquet", "scores.csv", "summary.json"])
def test_readers_refuse_a_torn_set(two_runs, tmp_path, name):
    torn = _torn_copy(*two_runs, tmp_path, name)
    with pytest.raises(OutputSetError, match="torn output set"):
        read_scores_set(torn)
    with pytest.raises(RunError, match="torn output set"):
        load_run(torn, with_governance=False, progress=False)
    with pytest.raises(ValueError, match="torn output set"):
        compare_scores(torn, two_runs[1].out_dir, system_a="ideal")


def test_report_and_gates_refuse_a_torn_set_with_one_line(two_runs, tmp_path):
    torn = _torn_copy(*two_runs, tmp_path, "scores.parquet")
    report = subprocess.run([sys.executable, "-m", "eval.report", str(torn), "--system", "ideal",
                             "--out", str(tmp_path / "r.html")], capture_output=True, text=True, timeout=300)
    assert report.returncode == 2 and "torn output set" in report.stderr and "Traceback" not in report.stderr
    assert not (tmp_path / "r.html").exists()
    gates = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", str(ROOT / "benchmarks" / "test_gates.py"),
                            "--run", str(torn), "--system", "ideal"], capture_output=True, text=True, timeout=300,
                           cwd=ROOT)
    assert gates.returncode != 0 and "torn output set" in gates.stdout + gates.stderr


def test_a_scores_file_beside_another_runs_summary_is_refused(two_runs, tmp_path):
    torn = _torn_copy(*two_runs, tmp_path, "summary.json")
    with pytest.raises(ValueError, match="torn output set"):
        compare_scores(torn / "scores.csv", two_runs[1].out_dir, system_a="ideal")


def test_a_set_without_run_ids_is_refused(two_runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(two_runs[0].out_dir, old)
    summary = json.loads((old / "summary.json").read_text())
    del summary["run_id"]
    (old / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(OutputSetError, match="no run_id"):
        read_scores_set(old)


def test_a_second_run_into_a_busy_folder_is_refused_and_the_set_stays_whole(two_runs, demo_manifest, tmp_path,
                                                                          capsys):
    full, _ = two_runs
    before = {name: (full.out_dir / name).read_bytes() for name in ("scores.parquet", "scores.csv", "summary.json")}
    with locked_out_dir(full.out_dir):
        code = score_main([str(demo_manifest), "--out", str(full.out_dir), "--no-cache", "--quiet",
                           "--recognizers", "sface"])
    assert code == 2 and "another eval.score run is writing" in capsys.readouterr().err
    assert before == {name: (full.out_dir / name).read_bytes() for name in before}
    assert (full.out_dir / LOCK_FILE).exists()


def test_out_naming_a_file_is_one_line_error(demo_manifest, tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    assert score_main([str(demo_manifest), "--out", str(target), "--no-cache", "--quiet", "--recognizers", "sface"]) == 2
    assert "names a file" in capsys.readouterr().err and target.read_text() == "keep me"


def _file_size_limit(limit):
    def apply():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_leaves_the_previous_set_whole_and_the_cache_in_place(two_runs, demo_manifest, score_cache,
                                                                         tmp_path, hide_optional_weights):
    full, _ = two_runs
    cache = tmp_path / "cache.sqlite"
    shutil.copyfile(score_cache, cache)
    before = {name: (full.out_dir / name).read_bytes() for name in ("scores.parquet", "scores.csv", "summary.json")}
    entries = read_manifest(demo_manifest).entries
    changed = write_manifest(demo_manifest.parent / "reworded.jsonl",  # a summary the cache has not seen: it writes
                             [entries[0].model_copy(update={"prompt": "reworded"}), *entries[1:]])
    out = subprocess.run([sys.executable, "-m", "eval.score", str(changed), "--out", str(full.out_dir),
                          "--cache", str(cache), "--quiet", "--recognizers", "sface,dlib"],
                         capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(4096),
                         env={**os.environ, "TORCH_HOME": str(hide_optional_weights.folder / "torch")})
    assert out.returncode == 2 and "cannot write the scores" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert f"cache {cache}: it cannot be used" in out.stderr and "keeping results in memory" in out.stderr
    assert before == {name: (full.out_dir / name).read_bytes() for name in before}
    assert not [p for p in full.out_dir.iterdir() if p.name.startswith(".staging")]
    assert not [p for p in tmp_path.iterdir() if ".broken-" in p.name]  # a full disk is not a broken cache
