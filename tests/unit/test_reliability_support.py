"""The soak test's memory criterion (tests/e2e/reliability/support.py) must be able to fail: steady growth is
caught, a plateau after warm-up and noise are not."""

from __future__ import annotations

import os

from tests.e2e.reliability.support import MIB, grows_without_bound, rss


def test_steady_growth_fails_and_a_plateau_passes() -> None:
    leak = [100 * MIB + i * 4 * MIB for i in range(24)]  # +4 MiB every sample: ~32 MiB between thirds
    assert grows_without_bound(leak)
    warm_then_flat = [50 * MIB + i * 10 * MIB for i in range(8)] + [130 * MIB + (i % 3) * MIB for i in range(16)]
    assert not grows_without_bound(warm_then_flat)
    # a small process may grow by 15 % of itself only if that is more than 24 MiB
    assert not grows_without_bound([10 * MIB] * 8 + [20 * MIB] * 8 + [30 * MIB] * 8)


def test_rss_of_this_process_and_of_none() -> None:
    assert rss(os.getpid()) > MIB
    assert rss(2 ** 22 + 12345) == 0
