"""Acceptance gates: one test per gate of benchmarks/gates.toml, judged by eval.report.gates.

A gate whose metric is unavailable is skipped with the reason, never passed. Every message states
the measured value, its 95% CI and the threshold."""
import pytest

from eval.report.gates import GateResult


def test_gate(gate: GateResult):
    if gate.verdict == "unavailable":
        pytest.skip(gate.message)
    if gate.verdict == "fail":
        pytest.fail(gate.message, pytrace=False)
    assert gate.verdict == "pass", gate.message
