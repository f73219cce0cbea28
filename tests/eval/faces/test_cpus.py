"""The face core sizes its thread pools by the CPUs the process was given (a Ray actor's share)."""
import os
import subprocess
import sys

import pytest

from eval.faces.cpus import cpu_budget


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), ("0", None), ("4,2", None), ("x", None), ("", None)])
def test_omp_num_threads_when_it_is_a_positive_integer(monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert cpu_budget() == (expected or len(os.sched_getaffinity(0)))


def test_an_analyzer_given_one_cpu_runs_every_model_on_one_thread():
    probe = ("import cv2; from eval.faces import FaceAnalyzer; a = FaceAnalyzer(recognizers=('sface', 'dlib')); "
             "print(cv2.getNumThreads(), *(r._session.get_session_options().intra_op_num_threads "
             "for r in a.recognizers.values()))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1", "1"]
