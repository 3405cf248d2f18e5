"""T-learner, cross-fitted AIPW diagnostics and evaluation against known potential outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib.effects import (
    ARMS,
    OVERLAP_ANY_MIN,
    REFERENCE_ARM,
    EffectModel,
    aipw_scores,
    evaluate_against_truth,
    fit_effect_model,
    fit_t_learner,
    overlap_flags,
)

FEATURES = ["age_years", "sex_male", "baseline_6mwd_m", "crp_mg_l", "fatigue_score", "hba1c_pct", "bmi"]


def make_confounded_twins(
    n: int = 3000, seed: int = 0, noise_sd: float = 20.0, planted_no_overlap: int = 0
) -> tuple[pd.DataFrame, np.ndarray]:
    """A twin table with confounded therapy and known potential outcomes.

    Returns ``(df, mu)``: ``df`` has ``person_id``/``site_id``, the features in ``FEATURES`` (hba1c 20% NaN),
    ``protocol_flag``, ``therapy`` and ``outcome_6mwd_90d_m`` (metres); ``mu`` is (n, 4) noise-free expected
    outcome per arm in ``ARMS`` order. Clinicians give rehab to fatigued / low-walk-distance patients,
    colchicine to high-CRP patients and antiviral to younger patients — the same features that drive the
    outcome and the effects, so differences in means are biased. ``planted_no_overlap`` rows get
    ``protocol_flag = 1`` and always colchicine (a positivity violation).
    """
    rng = np.random.default_rng(seed)
    age = rng.uniform(25, 85, n)
    sex = rng.integers(0, 2, n)
    base = rng.normal(430 - 2.0 * (age - 55), 60)
    crp = rng.lognormal(1.5, 0.8, n)
    fatigue = rng.uniform(0, 10, n)
    hba1c = rng.normal(6.0, 0.8, n)
    hba1c[rng.random(n) < 0.2] = np.nan
    bmi = rng.normal(28, 4, n)
    lcrp = np.log(crp) - 1.5
    mu0 = 60 + 0.85 * base - 1.0 * (age - 55) - 3.0 * fatigue
    effects = np.column_stack(
        [np.zeros(n), 20 + 6.0 * (fatigue - 5), 5 + 25.0 * lcrp, 5 - 1.0 * (age - 55)]
    )
    mu = mu0[:, None] + effects
    logits = np.column_stack(
        [
            np.zeros(n),
            0.2 * (fatigue - 5) - 0.006 * (base - 400),
            0.9 * lcrp,
            -0.025 * (age - 55) + 0.3,
        ]
    )
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    t = (p.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    flag = np.zeros(n)
    if planted_no_overlap:
        idx = rng.choice(n, planted_no_overlap, replace=False)
        flag[idx] = 1.0
        t[idx] = ARMS.index("colchicine")
    y = mu[np.arange(n), t] + rng.normal(0, noise_sd, n)
    df = pd.DataFrame(
        {
            "person_id": [f"tw{seed}_{i:06d}" for i in range(n)],
            "site_id": "site_a",
            "age_years": age,
            "sex_male": sex,
            "baseline_6mwd_m": base,
            "crp_mg_l": crp,
            "fatigue_score": fatigue,
            "hba1c_pct": hba1c,
            "bmi": bmi,
            "protocol_flag": flag,
            "therapy": np.array(ARMS, dtype=object)[t],
            "outcome_6mwd_90d_m": y,
        }
    )
    return df, mu


class DifferenceInMeans:
    """Naive baseline: every patient gets the arm's mean observed outcome (ignores confounding)."""

    arms = ARMS
    reference_arm = REFERENCE_ARM

    def __init__(self, df: pd.DataFrame):
        self.means = df.groupby("therapy")["outcome_6mwd_90d_m"].mean().reindex(list(ARMS)).to_numpy()

    def predict_outcomes(self, X: pd.DataFrame) -> np.ndarray:
        return np.tile(self.means, (len(X), 1))


class Oracle:
    """Returns the known expected outcomes (for checking the evaluation metrics themselves)."""

    arms = ARMS
    reference_arm = REFERENCE_ARM

    def __init__(self, mu: np.ndarray, shift: float = 0.0):
        self.mu, self.shift = mu, shift

    def predict_outcomes(self, X: pd.DataFrame) -> np.ndarray:
        out = self.mu.copy()
        out[:, 1:] += self.shift
        return out


@pytest.fixture(scope="module")
def cohort() -> tuple[pd.DataFrame, np.ndarray]:
    return make_confounded_twins(3000, seed=0)


@pytest.fixture(scope="module")
def fitted(cohort) -> tuple[EffectModel, dict[str, float]]:
    df, _ = cohort
    return fit_t_learner(df, FEATURES, seed=0, n_folds=5)


def test_t_learner_pehe_beats_difference_in_means(cohort, fitted):
    df, mu = cohort
    model, _ = fitted
    ours = evaluate_against_truth(model, df, mu)
    naive = evaluate_against_truth(DifferenceInMeans(df), df, mu)
    for arm in ARMS[1:]:
        assert ours[f"pehe_{arm}"] < naive[f"pehe_{arm}"], arm
    assert ours["regret"] < naive["regret"]
    assert ours["policy_value_model"] > ours["policy_value_observed"]
    assert ours["policy_value_oracle"] >= ours["policy_value_model"]


def test_dr_ate_within_three_standard_errors_of_truth(cohort, fitted):
    _, mu = cohort
    _, diag = fitted
    true_ate = (mu - mu[:, [0]]).mean(axis=0)
    for k, arm in enumerate(ARMS):
        if arm == REFERENCE_ARM:
            continue
        se = diag[f"dr_ate_se_{arm}"]
        assert 0 < se < 5
        assert abs(diag[f"dr_ate_{arm}"] - true_ate[k]) < 3 * se, arm
    # the confounding is strong enough that the unadjusted contrast misses by far
    k = ARMS.index("antiviral")
    assert abs(diag["naive_ate_antiviral"] - true_ate[k]) > 5 * diag["dr_ate_se_antiviral"]


def test_diagnostics_are_flat_aggregates(cohort, fitted):
    df, _ = cohort
    model, diag = fitted
    assert all(isinstance(v, float) for v in diag.values())
    assert diag["n_train"] == len(df)
    assert sum(diag[f"n_train_{a}"] for a in ARMS) == len(df)
    for arm in ARMS:
        assert 0.6 < diag[f"oof_r2_{arm}"] <= 1.0
        assert 15 < diag[f"oof_rmse_{arm}"] < 35  # noise sd is 20 m
    assert 0 < diag["propensity_min"] < diag["propensity_max"] < 1
    assert diag["frac_outside_overlap"] < 0.05  # this cohort has good overlap
    assert diag["dr_policy_gain"] > 2 * diag["dr_policy_gain_se"]
    assert diag["dr_policy_value_observed"] == pytest.approx(df["outcome_6mwd_90d_m"].mean())
    assert model.metadata["n_per_arm"] == df["therapy"].value_counts().to_dict()


def test_model_prediction_shapes(cohort, fitted):
    df, _ = cohort
    model, _ = fitted
    X = df.iloc[:50]
    out = model.predict_outcomes(X)
    eff = model.predict_effects(X)
    prop = model.propensity(X)
    assert out.shape == (50, 4) and eff.shape == (50, 3) and prop.shape == (50, 4)
    np.testing.assert_allclose(eff, out[:, 1:] - out[:, [0]])
    np.testing.assert_allclose(prop.sum(axis=1), 1.0)
    assert model.contrast_arms == ARMS[1:]


def test_rows_without_therapy_or_outcome_are_excluded_but_predicted():
    df, _ = make_confounded_twins(800, seed=3)
    df.loc[df.index[:40], "therapy"] = None
    df.loc[df.index[40:100], "outcome_6mwd_90d_m"] = np.nan
    model, diag = fit_t_learner(df, FEATURES, n_folds=3)
    assert diag["n_rows"] == 800
    assert diag["n_excluded_no_treatment"] == 40
    assert diag["n_excluded_no_outcome"] == 60
    assert diag["n_train"] == 700
    assert np.isfinite(model.predict_outcomes(df.iloc[:100])).all()


def test_bad_inputs_raise_without_values():
    df, _ = make_confounded_twins(300, seed=4)
    bad = df.copy()
    bad.loc[bad.index[0], "therapy"] = "homeopathy"
    with pytest.raises(ValueError, match="homeopathy"):
        fit_effect_model(bad, FEATURES)
    with pytest.raises(TypeError, match="person_id") as err:
        fit_effect_model(df, FEATURES + ["person_id"])
    assert df["person_id"].iloc[0] not in str(err.value)
    with pytest.raises(KeyError, match="not_a_column"):
        fit_effect_model(df, FEATURES + ["not_a_column"])
    thin = df[(df["therapy"] != "antiviral") | (np.arange(len(df)) % 50 == 0)]
    with pytest.raises(ValueError, match="antiviral"):
        fit_effect_model(thin, FEATURES)


def test_planted_no_overlap_group_is_flagged():
    n_planted = 100
    df, _ = make_confounded_twins(2000, seed=5, planted_no_overlap=n_planted)
    feats = FEATURES + ["protocol_flag"]
    model, diag = fit_t_learner(df, feats, n_folds=3)
    planted = df["protocol_flag"].to_numpy() == 1
    # (nearly) all planted rows are outside overlap, and they make up most of the flagged rows
    assert 0.95 * n_planted <= diag["n_outside_overlap"] <= n_planted + 40
    prop = model.propensity(df)
    observed = pd.Categorical(df["therapy"], categories=list(ARMS)).codes
    flags = overlap_flags(prop, observed)
    assert flags[planted].mean() >= 0.95
    assert flags[~planted].mean() < 0.03
    assert (prop[planted].min(axis=1) < OVERLAP_ANY_MIN).mean() >= 0.95


def test_overlap_rule_and_aipw_scores_by_hand():
    e = np.array([[0.5, 0.3, 0.195, 0.005], [0.04, 0.32, 0.32, 0.32], [0.25, 0.25, 0.25, 0.25]])
    t = np.array([0, 0, 1])
    np.testing.assert_array_equal(overlap_flags(e, t), [True, True, False])
    mu = np.array([[10.0, 20.0, 30.0, 40.0]] * 3)
    y = np.array([12.0, 10.0, 28.0])
    psi = aipw_scores(mu, e, t, y)
    np.testing.assert_allclose(psi[0], [10 + 2 / 0.5, 20, 30, 40])
    np.testing.assert_allclose(psi[1], [10 + 0 / 0.04, 20, 30, 40])
    np.testing.assert_allclose(psi[2], [10, 20 + 8 / 0.25, 30, 40])


def test_evaluate_against_truth_metrics(cohort):
    df, mu = cohort
    perfect = evaluate_against_truth(Oracle(mu), df, mu)
    assert perfect["regret"] == 0 and perfect["policy_accuracy"] == 1
    for arm in ARMS[1:]:
        assert perfect[f"pehe_{arm}"] == pytest.approx(0, abs=1e-9)
    shifted = evaluate_against_truth(Oracle(mu, shift=7.0), df, mu)
    for arm in ARMS[1:]:
        assert shifted[f"ate_error_{arm}"] == pytest.approx(7.0)
        assert shifted[f"pehe_{arm}"] == pytest.approx(7.0)
    observed = pd.Categorical(df["therapy"], categories=list(ARMS)).codes
    assert perfect["policy_value_observed"] == pytest.approx(mu[np.arange(len(df)), observed].mean())
    with pytest.raises(ValueError, match="shape"):
        evaluate_against_truth(Oracle(mu), df, mu[:, :3])


def test_three_estimators_share_one_yardstick_and_beat_difference_in_means():
    from twin_pipeline.lib.effects import ESTIMATORS, VALIDATION_METRIC, best_estimator, fit_estimators

    df, mu = make_confounded_twins(1500, seed=4)
    cf, results = fit_estimators(df, FEATURES, n_folds=3, seed=1)
    assert tuple(results) == ESTIMATORS
    keys = [set(r.diagnostics) for r in results.values()]
    assert keys[0] == keys[1] == keys[2]  # same metric names: runs line up in MLflow
    for name, r in results.items():
        assert r.model.kind == name and r.oof_outcomes.shape == (len(df), len(ARMS))
        ev = evaluate_against_truth(r.model, df, mu)
        naive = np.array([r.diagnostics[f"naive_ate_{a}"] for a in ARMS if a != REFERENCE_ARM])
        true_eff = (mu - mu[:, [0]])[:, 1:]
        naive_pehe = np.sqrt(((true_eff - naive) ** 2).mean(axis=0))
        pehe = np.array([ev[f"pehe_{a}"] for a in ARMS if a != REFERENCE_ARM])
        assert (pehe < naive_pehe).all(), name
        assert ev["policy_value_model"] > ev["policy_value_observed"], name
    best = best_estimator(results)
    assert results[best].diagnostics[VALIDATION_METRIC] == min(r.diagnostics[VALIDATION_METRIC] for r in results.values())
    # the nuisance-only diagnostics are identical across estimators
    assert len({r.diagnostics["dr_ate_colchicine"] for r in results.values()}) == 1


def test_unknown_estimator_is_refused():
    from twin_pipeline.lib.effects import fit_estimators, fit_model

    df, _ = make_confounded_twins(200, seed=2)
    with pytest.raises(ValueError, match="unknown estimator"):
        fit_model(df, FEATURES, estimator="s_forest")
    with pytest.raises(ValueError, match="unknown estimators"):
        fit_estimators(df, FEATURES, estimators=("t_learner", "magic"))


def test_all_nan_feature_does_not_break_fitting():
    from twin_pipeline.lib.effects import fit_model

    df, _ = make_confounded_twins(400, seed=6)
    df["hba1c_pct"] = np.nan
    for est in ("t_learner", "x_learner"):
        m = fit_model(df, FEATURES, estimator=est)
        assert np.isfinite(m.predict_outcomes(df)).all()
