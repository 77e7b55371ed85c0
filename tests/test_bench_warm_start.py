"""bench/warm_start.py: its searches are the service default with the warm start and data it
names, and it runs end to end (briefly; its figures are not asserted: tests never assert times)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import warm_start
from bench.search_efficiency import method_spec


def test_a_warm_search_is_the_cold_one_started_from_the_earlier_folder(tmp_path):
    cold = warm_start.search_spec(3, 75.0)
    assert cold == method_spec(3, 75.0, default=True)
    warm = warm_start.search_spec(3, 75.0, warm_from=tmp_path / "cold-4")
    assert warm["searcher"]["warm_start"] == [str(tmp_path / "cold-4" / "out")]
    assert {k: v for k, v in warm["searcher"].items() if k != "warm_start"} == cold["searcher"]
    other = warm_start.search_spec(4, 75.0, data_seed=warm_start.OTHER_DATA_SEED)
    assert other["data"]["seed"] == warm_start.OTHER_DATA_SEED != cold["data"]["seed"]


@pytest.mark.slow
def test_runs_quickly():
    text = warm_start.main(quick=True).render()
    for row in ("| cold", "| warm, same data", "| warm, other data", "cold / warm (same data):"):
        assert row in text, text
