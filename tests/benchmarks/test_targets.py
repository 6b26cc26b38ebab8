"""The target table of issue 13 and the slope fit: what the end of a bench run prints."""

from __future__ import annotations

import pytest

from benchmarks._targets import TARGETS, curve, curve_rises, summary
from benchmarks._workloads import fit_slope


def test_the_slope_fit_recovers_a_linear_per_call_cost() -> None:
    ns = [50.0, 200.0, 400.0, 800.0]
    assert fit_slope(ns, [0.24 + 0.0012 * n for n in ns]) == pytest.approx(0.0012)
    with pytest.raises(ValueError, match="two or more distinct x values"):
        fit_slope([5.0, 5.0], [1.0, 2.0])


def test_each_target_reads_met_or_its_gap_or_not_measured() -> None:
    figures = {"seq_steps@sqlite": 4000.0, "rtt.raw@http": 100.0, "roots@http": 300.0}
    peers = {"roots": {"resonate-sdk.http": 100.0}}
    rows = summary(figures, peers)
    by_figure = {row.split(" | ")[1]: row for row in rows[2:]}
    assert by_figure["seq_steps@sqlite"].endswith("| 4,000 steps/s | no (2.00x off) |")
    assert by_figure["rtt.raw@http"].endswith("| 100 us | yes |")
    assert by_figure["roots@http / resonate-sdk.http"].endswith("| 3 x | yes |")
    assert "not measured" in by_figure["fanout@memory"]
    assert len(rows) == 2 + len(TARGETS) + 1


def test_a_lower_is_better_ratio_is_peer_over_ours() -> None:
    rtt = next(t for t in TARGETS if t.figure == "rtt.raw@http")
    assert rtt.measure({"rtt.raw@http": 400.0}, {}) == 400.0
    assert rtt.gap(400.0) == "2.00x off"


def test_the_in_flight_curve_must_rise_and_never_fall_beyond_noise() -> None:
    figures = {"roots_inflight.8@http": 300.0, "roots_inflight.1@http": 100.0,
               "roots_inflight.64@http": 290.0, "roots@http": 5.0}
    assert curve(figures) == [(1, 100.0), (8, 300.0), (64, 290.0)]
    assert curve_rises(curve(figures))  # saturated at 8: 290 is within the slack of 300
    assert not curve_rises([(1, 200.0), (8, 170.0), (64, 100.0)])  # issue 13's "falls"
    assert not curve_rises([(1, 100.0), (8, 100.0)])  # flat: more in flight bought nothing
