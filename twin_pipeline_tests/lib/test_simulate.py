"""Treatment simulation over an ensemble: shape, reproducibility and probability bookkeeping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib.effects import ARMS
from twin_pipeline.lib.simulate import fit_ensemble, simulate_draws, simulate_treatments, summarize_draws
from twin_pipeline_tests.lib.test_effects import FEATURES, make_confounded_twins

N_MODELS = 3


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    df, _ = make_confounded_twins(900, seed=11)
    df.loc[df.index[:30], "outcome_6mwd_90d_m"] = np.nan  # not yet observed: simulated all the same
    return df


@pytest.fixture(scope="module")
def ensemble(cohort):
    return fit_ensemble(cohort, FEATURES, n_models=N_MODELS, seed=1)


def test_fit_ensemble_members_are_distinct_bootstraps(cohort, ensemble):
    assert len(ensemble) == N_MODELS
    preds = np.stack([m.predict_outcomes(cohort.iloc[:200]) for m in ensemble])
    assert not np.allclose(preds[0], preds[1])
    usable = cohort["outcome_6mwd_90d_m"].notna()
    for i, m in enumerate(ensemble):
        assert m.metadata["bootstrap_member"] == i
        # stratified bootstrap keeps each arm's row count
        assert m.metadata["n_per_arm"] == cohort.loc[usable, "therapy"].value_counts().to_dict()
    with pytest.raises(ValueError):
        fit_ensemble(cohort, FEATURES, n_models=0)


def test_simulation_table_shape_and_bookkeeping(cohort, ensemble):
    X = cohort.iloc[:250]
    sim = simulate_treatments(ensemble, X, noise_sd=20.0, n_draws=40, seed=3, chunk_size=100)
    n, k = len(X), len(ARMS)
    assert len(sim) == n * k
    assert sim.attrs["n_simulations"] == n * k * N_MODELS
    assert list(sim["therapy"].iloc[:k]) == list(ARMS)
    assert (sim["person_id"].to_numpy()[::k] == X["person_id"].to_numpy()).all()
    assert (sim["twin_index"].to_numpy()[::k] == np.arange(n)).all()
    assert (sim["site_id"] == "site_a").all()
    per_twin = sim.groupby("twin_index")
    np.testing.assert_allclose(per_twin["prob_best"].sum(), 1.0)
    assert (per_twin["recommended"].sum() == 1).all()
    assert ((sim["p10"] <= sim["mean"]) & (sim["mean"] <= sim["p90"])).all()
    assert (sim["p90"] - sim["p10"] > 0).all()
    rec = sim[sim["recommended"]]
    np.testing.assert_allclose(rec["recommendation_certainty"], rec["prob_best"])
    # the recommended arm has the twin's highest mean
    best_mean = per_twin["mean"].transform("max")
    np.testing.assert_allclose(rec["mean"], best_mean[sim["recommended"]])
    # highest mean is not always the most often best arm, but on average it is well above chance
    assert sim["recommendation_certainty"].between(0, 1).all()
    assert sim["recommendation_certainty"].mean() > 1.5 / k


def test_simulation_is_reproducible_for_a_seed(cohort, ensemble):
    X = cohort.iloc[:120]
    a = simulate_treatments(ensemble, X, noise_sd=25.0, n_draws=30, seed=7, chunk_size=50)
    b = simulate_treatments(ensemble, X, noise_sd=25.0, n_draws=30, seed=7, chunk_size=50)
    c = simulate_treatments(ensemble, X, noise_sd=25.0, n_draws=30, seed=8, chunk_size=50)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["p10"], c["p10"])


def test_without_noise_chunking_does_not_change_results(cohort, ensemble):
    X = cohort.iloc[:90]
    a = simulate_treatments(ensemble, X, noise_sd=0.0, n_draws=N_MODELS * 4, chunk_size=7)
    b = simulate_treatments(ensemble, X, noise_sd=0.0, n_draws=N_MODELS * 4, chunk_size=1000)
    pd.testing.assert_frame_equal(a, b)
    # noise-free draws cycle through members equally, so the mean is the ensemble mean
    ens_mean = np.mean([m.predict_outcomes(X) for m in ensemble], axis=0)
    np.testing.assert_allclose(a["mean"].to_numpy().reshape(len(X), -1), ens_mean, rtol=1e-5)


def test_single_model_without_noise_is_deterministic(cohort, ensemble):
    X = cohort.iloc[:60].drop(columns=["person_id", "site_id"])
    sim = simulate_treatments(ensemble[:1], X, noise_sd=0.0, n_draws=5)
    pred = ensemble[0].predict_outcomes(X)
    mean = sim["mean"].to_numpy().reshape(len(X), -1)
    np.testing.assert_allclose(mean, pred, rtol=1e-6)
    np.testing.assert_allclose(sim["p10"], sim["p90"])
    prob = sim["prob_best"].to_numpy().reshape(len(X), -1)
    np.testing.assert_array_equal(prob.argmax(axis=1), pred.argmax(axis=1))
    assert set(np.unique(prob)) <= {0.0, 1.0}
    assert "person_id" not in sim.columns and "site_id" not in sim.columns


def test_more_noise_means_less_certainty(cohort, ensemble):
    X = cohort.iloc[:200]
    low = simulate_treatments(ensemble, X, noise_sd=2.0, n_draws=60, seed=1)
    high = simulate_treatments(ensemble, X, noise_sd=80.0, n_draws=60, seed=1)
    assert low["recommendation_certainty"].mean() > high["recommendation_certainty"].mean() + 0.1


def test_draws_and_summaries_by_hand():
    preds = np.array([[[1.0, 5.0]], [[3.0, 2.0]]])  # 2 models, 1 twin, 2 arms
    draws = simulate_draws(preds, noise_sd=0.0, n_draws=4, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(draws[:, 0, :], [[1, 5], [3, 2], [1, 5], [3, 2]])
    s = summarize_draws(draws)
    np.testing.assert_allclose(s["mean"], [[2.0, 3.5]])
    np.testing.assert_allclose(s["prob_best"], [[0.5, 0.5]])
    rng = np.random.default_rng(0)
    shared = simulate_draws(np.zeros((1, 2000, 2)), noise_sd=1.0, n_draws=3, rng=rng, noise_corr=1.0)
    np.testing.assert_allclose(shared[..., 0], shared[..., 1], atol=1e-6)


def test_invalid_arguments(cohort, ensemble):
    with pytest.raises(ValueError):
        simulate_treatments([], cohort, noise_sd=1.0)
    with pytest.raises(ValueError):
        simulate_treatments(ensemble, cohort, noise_sd=-1.0)
    other = fit_ensemble(cohort, FEATURES[:-1], n_models=1)
    with pytest.raises(ValueError, match="disagree"):
        simulate_treatments(ensemble + other, cohort, noise_sd=1.0)
