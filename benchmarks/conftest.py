"""Options and the run under judgement for `pytest benchmarks/`.

    pytest benchmarks/ [--run MANIFEST_OR_SCORES] [--system NAME] [--gates FILE]
                       [--baseline OTHER] [--baseline-system NAME]
                       [--calibration FILE] [--governance CONFIG] [--reviews EXPORT_DIR]
                       [--junitxml gates.xml]

Without --run the gates judge the built-in demo, whose 'ideal' system is the candidate. The run is
loaded once, at collection, because the set of gates (one test each) depends on it: its recognizers,
and whether a baseline was given.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from eval.report.gates import DEFAULT_GATES_FILE, GateResult, GatesFileError
from eval.report.review import prepare_review
from eval.report.run import RunError
from eval.review.export import ReviewsError

_RESULTS = pytest.StashKey[list[GateResult]]()


def pytest_addoption(parser):
    group = parser.getgroup("gates", "acceptance gates (benchmarks/test_gates.py)")
    group.addoption("--run", type=Path, default=None,
                    help="run manifest (JSONL) or scores folder to judge; default: the built-in demo")
    group.addoption("--baseline", type=Path, default=None, help="run to compare with (regression gates)")
    group.addoption("--system", default=None,
                    help="candidate system (default: the run's only system, or 'ideal' in the demo)")
    group.addoption("--baseline-system", default=None,
                    help="the baseline's system (default: the candidate's name, or the baseline's only one)")
    group.addoption("--gates", type=Path, default=DEFAULT_GATES_FILE, help="gates file (default: benchmarks/gates.toml)")
    group.addoption("--calibration", type=Path, default=None, help="calibration JSON for the thresholds")
    group.addoption("--governance", type=Path, default=None,
                    help="governance config (default: $GOVERNANCE_CONFIG, else ./governance.toml)")
    group.addoption("--reviews", type=Path, default=None,
                    help="human-review export folder (python -m eval.review export) for the review gates")


def gate_results(config: pytest.Config) -> list[GateResult]:
    if _RESULTS not in config.stash:
        option = config.getoption
        try:
            review = prepare_review(option("--run"), system=option("--system"), baseline=option("--baseline"),
                                    baseline_system=option("--baseline-system"), gates_file=option("--gates"),
                                    calibration=option("--calibration"), governance=option("--governance"),
                                    reviews=option("--reviews"), progress=False)
        except (RunError, GatesFileError, ReviewsError) as exc:
            raise pytest.UsageError(str(exc)) from exc
        config.stash[_RESULTS] = review.gates()
    return config.stash[_RESULTS]


def pytest_generate_tests(metafunc):
    if "gate" in metafunc.fixturenames:
        results = gate_results(metafunc.config)
        metafunc.parametrize("gate", results, ids=[result.gate for result in results])
