"""Run styles never repeat among the first 360 runs, and axis limits are never degenerate:
a flat series gets a padded window, accuracy stays within [0, 100] %."""

from __future__ import annotations

import pytest

from deqbench.report.plot_style import (
    baseline_style,
    log_limits,
    magnitude_limits,
    padded_limits,
    percent_limits,
    step_limits,
    styles,
)


def test_eleven_runs_and_more_never_share_a_style():
    eleven = styles(11)
    assert len({(s.color, s.linestyle, s.marker) for s in eleven}) == 11
    # The eleventh takes the first colour again, but another line style and another marker.
    assert (eleven[0].color, eleven[0].linestyle, eleven[0].marker) == ("C0", "-", "o")
    assert (eleven[10].color, eleven[10].linestyle, eleven[10].marker) == ("C0", "--", "s")
    assert len({(s.color, s.linestyle, s.marker) for s in styles(360)}) == 360
    # Points show colour and marker only: those pairs are distinct for 90 runs.
    assert len({(s.color, s.marker) for s in styles(90)}) == 90


def test_baselines_differ_from_each_other():
    drawn = [baseline_style(i) for i in range(40)]
    assert len({(b["color"], str(b["ls"])) for b in drawn}) == 40
    assert baseline_style(3) == {"color": "C3", "ls": "--", "lw": 1.5}


@pytest.mark.parametrize(
    "values,expected",
    [
        ([0.0, 0.0], (0.0, 10.0)),  # a 2-step smoke run at 0 %: not −0.04 to 0.04
        ([100.0], (90.0, 100.0)),
        ([50.0, 50.0], (45.0, 55.0)),
        ([40.0, 60.0], (38.4, 61.6)),  # 8 % of the span each side
        ([2.0, 99.0], (0.0, 100.0)),
    ],
)
def test_accuracy_limits(values, expected):
    assert percent_limits(values) == pytest.approx(expected)


def test_flat_series_get_a_window_around_them():
    assert magnitude_limits([2.3, 2.3]) == pytest.approx((2.185, 2.415))  # 10 % of 2.3 wide
    assert magnitude_limits([0.0]) == pytest.approx((-0.05, 0.05))
    assert step_limits([0, 0]) == pytest.approx((-0.5, 0.5))
    assert step_limits([0, 10]) == pytest.approx((-0.5, 10.5))
    low, high = log_limits([1e-3, 1e-3])
    assert (low, high) == pytest.approx((10**-3.5, 10**-2.5))
    assert padded_limits([float("nan")], min_span=1.0) == (0.0, 1.0)
