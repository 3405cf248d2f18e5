"""Propensity model of the AIPW nuisances (issue #8): selected by cross-validated log loss between a linear
and an additive-spline multinomial logit, calibrated at one hospital's size, shared by every fit."""

from __future__ import annotations

import numpy as np
import pytest

from twin_pipeline.lib import effects
from twin_pipeline.lib.twin import MODEL_FEATURES


def _assignment(kind: str, n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features (3 normal + 1 binary column) and an arm index drawn from a 4-arm multinomial logit that is
    linear in the features (``kind="linear"``) or a pair of thresholds (``kind="threshold"``)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    b = (rng.random(n) < 0.4).astype(float)
    zero = np.zeros(n)
    if kind == "linear":
        logits = np.column_stack([zero, 1.0 * x[:, 0] - 0.5 * b, -0.8 * x[:, 1], 0.6 * x[:, 2]])
    else:
        logits = np.column_stack([zero, 2.5 * (x[:, 0] > 0.5), -2.5 * (np.abs(x[:, 1]) < 0.7), zero])
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    t = (p.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    return np.column_stack([x, b]), t


@pytest.fixture(scope="module")
def site() -> tuple:
    """One generated hospital of ~900 analysed patients (the size at which issue #8 was measured)."""
    df, _ = effects.generator_twins(3000, seed=12, n_sites=3)
    df = df[df["outcome_6mwd_90d_m"].notna()]
    return df[df["site_id"] == "hospital_a"].reset_index(drop=True)


@pytest.mark.parametrize("kind, expected", [("linear", "linear"), ("threshold", "spline")])
def test_selection_picks_the_specification_that_matches_the_assignment(kind, expected):
    for seed in (0, 1):
        X, t = _assignment(kind, seed=seed)
        spec, c = effects.select_propensity_model(X, t, seed=0)
        assert spec == expected, (kind, seed, spec, c)
        assert c in effects.PROPENSITY_C_GRID


def test_cross_fitted_propensities_are_calibrated_at_site_size(site):
    """The cause of issue #8: an unregularised linear logit gave out-of-fold propensities far below the truth
    (0.001 where the generator never goes below 0.0375), so the inverse-propensity weights of an arm summed to
    10-40 % more than the rows (E[1{T=k} / e_k] = 1), and AIPW over-corrected. Tolerance: the weight sum of
    every arm within 10 % of the row count, no propensity at the 0.01 clip."""
    cf = effects.cross_fit(site, MODEL_FEATURES, seed=7, n_folds=3)
    assert cf.propensity_spec in effects.PROPENSITY_SPECS and cf.propensity_c in effects.PROPENSITY_C_GRID
    rows = np.arange(len(cf.t))
    w = 1.0 / np.maximum(cf.e[rows, cf.t], effects.PROPENSITY_CLIP)
    for k, arm in enumerate(cf.arms):
        assert abs(w[cf.t == k].sum() / len(w) - 1.0) < 0.10, arm
    assert cf.e.min() > effects.PROPENSITY_CLIP
    np.testing.assert_allclose(cf.e.sum(axis=1), 1.0)
    # the old specification at C = 1 on the same folds: the weights of some arm overshoot
    old = effects.cross_fit(site, MODEL_FEATURES, seed=7, n_folds=3, propensity_spec="linear", propensity_c=1.0)
    w_old = 1.0 / np.maximum(old.e[rows, old.t], effects.PROPENSITY_CLIP)
    assert max(w_old[old.t == k].sum() / len(w_old) for k in range(len(old.arms))) > 1.2


def test_fixed_specification_is_used_as_given_and_bad_values_are_refused(site):
    model = effects.fit_model(site, MODEL_FEATURES, propensity_spec="linear", propensity_c=0.5)
    md = model.metadata
    assert (md["propensity_spec"], md["propensity_c"], md["propensity_selection"]) == ("linear", 0.5, "fixed")
    assert md["propensity_model"] == effects.PROPENSITY_SPEC_DESCRIPTION["linear"]
    assert model.propensity_model[-1].C == 0.5
    only_c = effects.fit_model(site, MODEL_FEATURES, propensity_c=0.5).metadata
    assert only_c["propensity_c"] == 0.5 and only_c["propensity_spec"] in effects.PROPENSITY_SPECS
    assert "cross-validated" in only_c["propensity_selection"]
    with pytest.raises(ValueError, match="quadratic"):
        effects.fit_model(site, MODEL_FEATURES, propensity_spec="quadratic")
    with pytest.raises(ValueError, match="propensity_c must be positive"):
        effects.cross_fit(site, MODEL_FEATURES, propensity_c=0.0)


def test_every_fit_shares_the_cross_fitted_choice(site):
    cf, results = effects.fit_estimators(site, MODEL_FEATURES, estimators=("t_learner", "x_learner"), n_folds=3)
    for r in results.values():
        md = r.model.metadata
        assert (md["propensity_spec"], md["propensity_c"]) == (cf.propensity_spec, cf.propensity_c)
        assert "cross_fit" in md["propensity_selection"]
        assert r.diagnostics["propensity_c"] == cf.propensity_c
        assert r.diagnostics["propensity_spline"] == float(cf.propensity_spec == "spline")
        assert r.model.propensity_model[-1].C == cf.propensity_c
    members = effects.fit_ensemble(site, MODEL_FEATURES, n_models=2, seed=3)
    choices = {(m.metadata["propensity_spec"], m.metadata["propensity_c"]) for m in members}
    assert len(choices) == 1 and "shared by the members" in members[0].metadata["propensity_selection"]


def test_rank_spline_features_expand_continuous_columns_only():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.lognormal(size=200), rng.integers(0, 2, 200), np.ones(200), rng.integers(0, 5, 200)])
    f = effects.RankSplineFeatures().fit(X)
    np.testing.assert_array_equal(f.continuous_, [True, False, False, True])
    Z = f.transform(X)
    basis = effects.PROPENSITY_SPLINE_KNOTS + 1
    assert Z.shape == (200, 2 + 2 * basis) and np.isfinite(Z).all()
    np.testing.assert_array_equal(Z[:, :2], X[:, 1:3])  # binary and constant columns pass through
    # the basis of a continuous column is a partition of unity on its rank scale, also beyond the range
    np.testing.assert_allclose(Z[:, 2 : 2 + basis].sum(axis=1), 1.0)
    far = f.transform(np.array([[1e6, 0.0, 1.0, 9.0]]))
    np.testing.assert_allclose(far[0, 2 : 2 + basis].sum(), 1.0)
