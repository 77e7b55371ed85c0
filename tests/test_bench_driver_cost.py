"""bench/driver_cost.py: the cost per trial is read right from the driver's clock, and the
benchmark runs end to end (briefly; its figures are not asserted)."""

from __future__ import annotations

import pytest

from bench.driver_cost import DriverClock, main


def test_cost_per_trial_is_cpu_between_trial_starts_over_the_trials_between():
    clock = DriverClock()
    clock.cpu = [0.0, 0.001, 0.002, 0.003, 0.013, 0.023, 0.033]  # 1 ms a trial, then 10 ms
    assert clock.per_trial_ms(2, 2) == pytest.approx(1.0)  # starts of trials 1..3
    assert clock.per_trial_ms(6, 2) == pytest.approx(10.0)  # trials 5..7
    assert clock.per_trial_ms(7, 4) == pytest.approx(10.0)  # clipped at the last start: trials 5..7, not 5..9
    assert clock.per_trial_ms(4, 6) == pytest.approx(33 / 6)  # trials 1..7: 33 ms over 6 trials


@pytest.mark.slow
def test_runs_quickly():
    text = main(quick=True).render()
    assert "| service: whole search" in text and "| bare Ray Tune" in text, text


def test_sampler_cost_runs_without_ray():
    from bench.driver_cost import sampler_cost

    text = sampler_cost(sizes=(3, 12), samples=2).render()
    assert "| 12 " in text and "TPE alone" in text, text
