"""Fixed/random-effects pooling of site estimates."""

from __future__ import annotations

import numpy as np
import pytest

from twin_pipeline.lib.meta_analysis import pool_estimates


def test_fixed_effect_is_the_inverse_variance_mean():
    res = pool_estimates(np.array([10.0, 20.0]), np.array([1.0, 2.0]))
    assert res.fixed == pytest.approx((10 / 1 + 20 / 4) / (1 + 1 / 4))
    assert res.fixed_se == pytest.approx(np.sqrt(1 / 1.25))


def test_homogeneous_sites_give_no_heterogeneity_and_heterogeneous_ones_are_detected():
    rng = np.random.default_rng(0)
    se = np.full(10, 2.0)
    same = pool_estimates(15 + rng.normal(0, 2.0, 10), se)
    assert same.q_pvalue > 0.05 and same.random == pytest.approx(same.fixed, abs=1.0)
    planted = np.array([0, 0, 0, 0, 0, 30, 30, 30, 30, 30], dtype=float) + rng.normal(0, 2.0, 10)
    het = pool_estimates(planted, se)
    assert het.q_pvalue < 1e-6 and het.i2 > 0.9
    assert het.tau2 == pytest.approx(15.0**2, rel=0.35)  # between-site sd of the planted effects is 15
    assert het.random_se > het.fixed_se


def test_sites_without_a_usable_standard_error_are_left_out():
    res = pool_estimates(np.array([5.0, 7.0, np.nan]), np.array([1.0, 0.0, 1.0]))
    assert res.n_sites == 1 and res.fixed == 5.0
