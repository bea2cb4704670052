"""Bootstrap CIs over seeds × prompts (pure)."""
from __future__ import annotations

import pytest

from vgrout_ray.reporting.bootstrap import bootstrap_paired, bootstrap_rate, fmt_ci

pytestmark = pytest.mark.unit


def test_zero_variance_data_gives_a_zero_width_ci():
    runs = [[(2, 8)] * 16 for _ in range(5)]
    ci = bootstrap_rate(runs, n_boot=200)
    assert ci["mean"] == ci["lo"] == ci["hi"] == 0.25
    assert (ci["n_seeds"], ci["n_prompts"], ci["n_samples"]) == (5, 80, 640)


def test_the_ci_covers_the_mean_and_widens_with_spread():
    runs = [[(0, 8), (8, 8), (4, 8), (2, 8)], [(1, 8), (7, 8), (3, 8), (5, 8)], [(0, 8), (6, 8), (2, 8), (4, 8)]]
    ci = bootstrap_rate(runs, n_boot=2000, seed=1)
    assert ci["mean"] == pytest.approx(42 / 96)
    assert ci["lo"] < ci["mean"] < ci["hi"]
    narrow = bootstrap_rate([[(4, 8)] * 4 for _ in range(3)], n_boot=200)
    assert ci["hi"] - ci["lo"] > narrow["hi"] - narrow["lo"] == 0.0
    assert bootstrap_rate(runs, n_boot=300, seed=5) == bootstrap_rate(runs, n_boot=300, seed=5)  # seeded


def test_seed_level_spread_is_resampled():
    """Each seed has zero prompt spread, but the seeds differ: the CI must not be zero-width."""
    runs = [[(0, 8)] * 4, [(8, 8)] * 4]
    ci = bootstrap_rate(runs, n_boot=500)
    assert ci["mean"] == 0.5 and ci["lo"] == 0.0 and ci["hi"] == 1.0


def test_paired_difference():
    base = [[(4, 8), (2, 8)], [(6, 8), (0, 8)]]
    same = bootstrap_paired(base, base, n_boot=300)
    assert same["mean"] == same["lo"] == same["hi"] == 0.0
    lower = [[(k - 1, n) if k else (0, n) for k, n in s] for s in base]
    d = bootstrap_paired(lower, base, n_boot=300)
    assert d["mean"] == pytest.approx(-3 / 32) and d["hi"] <= 0 and d["lo"] <= d["mean"] <= d["hi"]
    with pytest.raises(ValueError, match="differ"):
        bootstrap_paired(base, base[:1])


def test_bad_counts_fail_loud():
    for bad in ([], [[]], [[(3, 2)]], [[(0, 0)]], [[(-1, 4)]]):
        with pytest.raises(ValueError):
            bootstrap_rate(bad)
    assert fmt_ci(None) == "—" and fmt_ci({"mean": 0.5, "lo": 0.25, "hi": 0.75}) == "0.500 [0.250, 0.750]"
