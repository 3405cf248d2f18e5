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


def test_wald_ci_and_pooled_ci():
    from twin_pipeline.lib.meta_analysis import wald_ci

    lo, hi = wald_ci(10.0, 2.0)
    assert lo == pytest.approx(10 - 1.959964 * 2) and hi == pytest.approx(10 + 1.959964 * 2)
    res = pool_estimates(np.array([0.0, 30.0, 10.0]), np.array([2.0, 2.0, 2.0]))
    assert res.ci("random")[1] - res.ci("random")[0] > res.ci("fixed")[1] - res.ci("fixed")[0]
    with pytest.raises(ValueError, match="level"):
        wald_ci(1.0, 1.0, level=1.5)


def test_pool_table_groups_and_rejects_double_counted_sites():
    import pandas as pd

    from twin_pipeline.lib.meta_analysis import POOLED_COLUMNS, pool_table

    df = pd.DataFrame({
        "siteid": ["a", "b", "a", "b"], "therapy": ["rehab"] * 4, "subgroup": ["all", "all", "old", "old"],
        "estimate": [10.0, 20.0, 5.0, 7.0], "se": [1.0, 1.0, 2.0, 2.0],
    })
    out = pool_table(df, ["therapy", "subgroup"])
    assert list(out.columns) == ["therapy", "subgroup", *POOLED_COLUMNS]
    assert out.set_index("subgroup").loc["all", "fixed"] == pytest.approx(15.0)
    assert pool_table(df.iloc[:0], ["therapy", "subgroup"]).empty
    with pytest.raises(ValueError, match="more than one row"):
        pool_table(pd.concat([df, df.iloc[:1]]), ["therapy", "subgroup"])
    with pytest.raises(KeyError, match="se"):
        pool_table(df.drop(columns=["se"]), ["therapy", "subgroup"])
