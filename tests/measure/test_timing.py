"""The timing statistics, and the live-tensor meter that gives `solver_mem_mb`."""

from __future__ import annotations

import torch

from deqbench.measure.timing import LiveTensorMeter, Timing, median_iqr

KB4 = 4096  # bytes of a float32 tensor of 1024 numbers


def test_counts_what_the_block_allocates_at_its_peak():
    x = torch.zeros(1024)
    meter = LiveTensorMeter()
    with meter:
        a = x + 1  # 4 KB
        b = a * 2  # 8 KB live
        del a, b
        c = x.clone()  # 4 KB: the peak stays at 8
        c.add_(1)  # in place: nothing new
        c[:10].mul_(2)  # a view: same storage
    assert meter.peak == 2 * KB4


def test_what_excluded_work_allocates_is_never_counted():
    meter = LiveTensorMeter()

    @meter.exclude
    def f(z):
        return torch.tanh(z) + 1  # f's own allocations

    z = torch.zeros(1024)
    with meter:
        fz = f(z)
        fz.detach().numpy()  # reading it (a detach is a dispatched op) allocates nothing
        total = fz.view(32, 32).sum(0)  # 128 bytes: the only thing counted so far
        assert meter.peak == 128
        kept = fz.clone()  # a copy is the solver's own
    assert meter.peak == KB4 + 128
    assert kept.shape == fz.shape and total.shape == (32,)


def test_memory_from_before_the_block_is_never_counted_even_when_viewed():
    before = torch.zeros(1024)
    meter = LiveTensorMeter()
    with meter:
        before.detach().numpy()  # a view of it, as a solver's kernels take one
        before.view(32, 32).add_(1)  # in place on a view
        torch.add(before, 1, out=before)  # out=
        assert meter.peak == 0
        before.clone()
    assert meter.peak == KB4


def test_median_and_iqr_by_hand():
    assert median_iqr([4.0, 1.0, 3.0, 2.0, 5.0]) == (3.0, 2.0)  # quartiles 2 and 4
    assert median_iqr([7.0]) == (7.0, 0.0)


def test_ratios_pair_repeats_so_drift_cancels():
    # The machine slows down 3× half way; the solve costs 1.2 bare loops throughout.
    bare = Timing((10.0, 10.0, 10.0, 30.0, 30.0))
    solve = Timing((12.0, 12.0, 12.0, 36.0, 36.0))
    assert median_iqr(solve.ratios(bare)) == (1.2, 0.0)
    assert solve.median_ms / bare.median_ms == 1.2  # here the medians happen to agree…
    bare = Timing((10.0, 10.0, 30.0, 30.0, 30.0))  # …but not when drift splits the repeats
    solve = Timing((12.0, 12.0, 12.0, 36.0, 36.0))  # differently (the third pair: 12 / 30)
    assert median_iqr(solve.ratios(bare))[0] == 1.2
    assert solve.median_ms / bare.median_ms == 12.0 / 30.0
