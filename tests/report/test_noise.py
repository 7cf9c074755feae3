"""Telling differences from noise: Wilson intervals, seed means and spreads, overlap."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from deqbench.report.noise import (
    Z95,
    flagged_noisy,
    has_repeats,
    mean_interval,
    percent_interval,
    seed_groups,
    tied_with_best,
    wilson_interval,
    within_noise,
)
from deqbench.runs.train.kind import TRAIN_KEYS


@pytest.mark.parametrize(
    "successes,n,low,high",
    [
        # 95 of 100: z²/n = 0.0384146; centre (0.95 + 0.0192073) / 1.0384146 = 0.933352;
        # half 1.959964 / 1.0384146 × √(0.000475 + 0.0000960) = 0.045103.
        (95, 100, 88.82, 97.85),
        (0, 10, 0.00, 27.75),  # no success: the lower end is exactly 0
        (10, 10, 72.25, 100.00),  # all: the upper end is exactly 100
        (353, 360, 96.04, 99.05),  # the quick start's 98.1 % on 360 images
    ],
)
def test_wilson_interval_against_hand_computed_values(successes, n, low, high):
    lo, hi = wilson_interval(successes, n)
    assert (round(100 * lo, 2), round(100 * hi, 2)) == (low, high)
    assert percent_interval(100 * successes / n, n) == pytest.approx((100 * lo, 100 * hi))
    assert round(Z95, 6) == 1.959964


def test_wilson_bounds_at_the_edges_are_exact():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert percent_interval(100.0, 360)[1] == 100.0


@pytest.mark.parametrize(
    "successes,n,message",
    [(1, 0, "n = 0"), (5, 4, "5 successes out of 4"), (-1, 4, "-1 successes out of 4")],
)
def test_wilson_bad_input_is_one_clear_line(successes, n, message):
    with pytest.raises(ValueError, match=message):
        wilson_interval(successes, n)


def test_mean_interval_is_student_t_and_needs_two_seeds():
    # mean 81, SD 1 over 3 seeds: t(0.975, 2 df) = 4.302653, half 4.302653 / √3 = 2.484138
    low, high = mean_interval(81.0, 1.0, 3)
    assert (round(low, 4), round(high, 4)) == (78.5159, 83.4841)
    assert mean_interval(81.0, 1.0, 1) is None and mean_interval(81.0, math.nan, 3) is None


def _rows(*specs):
    base = {"model": "m", "solver": "anderson", "gradient": "ift", "status": "completed"}
    return pd.DataFrame([{**base, **spec} for spec in specs])


def test_seed_groups_mean_sd_n_and_the_wilson_interval_of_the_mean():
    frame = _rows(
        {"seed": 0, "options": '{"deq.gradient": "ift"}', "eval_top1": 80.0, "eval_count": 100},
        {"seed": 1, "options": '{"deq.gradient": "ift"}', "eval_top1": 81.0, "eval_count": 100},
        {"seed": 2, "options": '{"deq.gradient": "ift"}', "eval_top1": 85.0, "eval_count": 100},
        {"seed": 0, "gradient": "jfb", "options": '{"deq.gradient": "jfb"}', "eval_top1": 70.0},
        {"seed": 1, "gradient": "jfb", "options": '{"deq.gradient": "jfb"}', "status": "error"},
    )
    assert has_repeats(frame, TRAIN_KEYS)
    groups = seed_groups(frame, TRAIN_KEYS, ["eval_top1", "eval_count", "absent"])
    ift, jfb = groups.to_dict("records")
    # 80, 81, 85: mean 82, SD √((4 + 1 + 9) / 2) = √7 = 2.645751
    assert (ift["n"], ift["runs"], ift["seeds"], ift["status"]) == (3, 3, "0 1 2", "completed")
    assert ift["eval_top1"] == 82.0 and ift["eval_top1_sd"] == pytest.approx(math.sqrt(7))
    assert ift["eval_top1_n"] == 3 and "absent" not in groups and "seed" not in groups
    # the seeds share the 100-image evaluation set: Wilson of 82 of 100
    assert (round(ift["eval_top1_ci_low"], 2), round(ift["eval_top1_ci_high"], 2)) == (
        73.33,
        88.30,
    )
    # one seed failed: it is left out of the mean, and the configuration's status is its
    assert (jfb["n"], jfb["runs"], jfb["status"], jfb["eval_top1"]) == (1, 2, "error", 70.0)
    assert math.isnan(jfb["eval_top1_sd"])


def test_sweeping_the_suite_seed_is_repeating_not_a_new_configuration():
    frame = _rows(
        {"seed": 3, "options": '{"suite.seed": 3, "recipe.lr": 0.1}', "eval_top1": 50.0},
        {"seed": 4, "options": '{"recipe.lr": 0.1, "suite.seed": 4}', "eval_top1": 60.0},
    )
    groups = seed_groups(frame, TRAIN_KEYS, ["eval_top1"])
    assert len(groups) == 1 and groups["options"].item() == '{"recipe.lr": 0.1}'
    assert groups["eval_top1"].item() == 55.0


def test_same_seed_twice_is_a_duplicate_not_a_repeat():
    assert not has_repeats(_rows({"seed": 0}, {"seed": 0}), TRAIN_KEYS)
    assert not has_repeats(_rows({"seed": 0}, {"seed": 1, "gradient": "jfb"}), TRAIN_KEYS)
    assert has_repeats(_rows({"seed": 0}, {"seed": 1}), TRAIN_KEYS)


def _run(top1, hits, n):
    low, high = percent_interval(100 * hits / n, n)
    return {"eval_top1": top1, "eval_top1_ci_low": low, "eval_top1_ci_high": high}


def test_within_noise_when_wilson_or_seed_intervals_overlap():
    best = _run(95.0, 342, 360)  # [92.24, 96.81]
    close = _run(93.3, 336, 360)  # [90.27, 95.48]: overlaps
    far = _run(85.0, 306, 360)  # [80.94, 88.32]: does not
    assert within_noise(best, close, "eval_top1") and not within_noise(best, far, "eval_top1")
    assert not within_noise({"eval_top1": 95.0}, {"eval_top1": 95.1}, "eval_top1")  # no interval
    # Seed means: 81 ± 1 and 79 ± 1 over 3 seeds, t intervals [78.52, 83.48] and [76.52, 81.48]
    a = {"eval_miou": 81.0, "eval_miou_sd": 1.0, "eval_miou_n": 3}
    assert within_noise(a, {"eval_miou": 79.0, "eval_miou_sd": 1.0, "eval_miou_n": 3}, "eval_miou")
    assert not within_noise(
        a, {"eval_miou": 71.0, "eval_miou_sd": 1.0, "eval_miou_n": 3}, "eval_miou"
    )
    assert tied_with_best([close, best, far, {}], "eval_top1") == [True, False, False, False]


def test_flagged_noisy_reads_the_noisy_column_else_the_iqrs():
    # A noisy bare loop makes the overhead ratio (bare in its denominator) noisy too, and the
    # overhead the cost in f-evaluations (NFE × overhead).
    derived = {"overhead_per_nfe", "solve_cost_f_evals"}
    assert flagged_noisy({"noisy": "bare_ms_median"}) == {"bare_ms_median", *derived}
    assert flagged_noisy({"noisy": "overhead_per_nfe"}) == derived
    assert flagged_noisy({"noisy": "", "solve_ms_median": 1.0, "solve_ms_iqr": 0.5}) == set()
    # A training row has no such column: an IQR over 10 % of the median flags the figure.
    assert flagged_noisy({"step_ms_median": 100.0, "step_ms_iqr": 10.5}) == {"step_ms_median"}
    assert flagged_noisy({"step_ms_median": 100.0, "step_ms_iqr": 10.0}) == set()
