"""The chaos soak's quick mode (bench/chaos.py): a search on a real 2-node Ray cluster logging to
a real MLflow server, its output folder on a tmpfs of its own, with a trial process, the
launcher, the worker node and the MLflow server each killed once, Ctrl-C pressed once, SIGTERM
sent to the launcher once, the disk filled (and then freed) once, and a line of the record
damaged (and then restored) once while the launcher was not running. Every fault must have
been injected, each fault's own promise (its exit status, its one line) and every invariant
must have held. Skipped, saying why, where `mount -t tmpfs` is not permitted (it needs root)."""

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
