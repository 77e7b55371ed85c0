"""The chaos soak's quick mode (bench/chaos.py): a search on a real 2-node Ray cluster logging to
a real MLflow server, with a trial process, the launcher, the worker node and the MLflow server
each killed once and Ctrl-C pressed once. Every fault must have been injected and every
invariant must have held."""

from __future__ import annotations

import pytest

from bench.chaos import KINDS, QUICK, run, table

pytestmark = pytest.mark.slow


def test_quick_soak_injects_every_fault_and_every_invariant_holds() -> None:
    outcome = run(QUICK)
    report = table(outcome).render()
    print(report)
    injected = {kind: sum(i.kind == kind for i in outcome.injections) for kind in KINDS}
    assert injected == QUICK.faults, report
    assert outcome.checks and all(check.held for check in outcome.checks), report
