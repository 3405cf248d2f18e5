"""Treatment simulation for patient twins: every twin under every arm, with uncertainty.

Grain of the result: one row per twin × arm. For each twin the per-arm outcome (six-minute walk distance
at 90 days, metres) is simulated ``n_draws`` times: each draw takes the prediction of one ensemble member
(bootstrap-fitted ``EffectModel``s, cycled over draws) and adds Gaussian outcome noise. From the draws we
report the mean, the 10th/90th percentiles, the probability that the arm is the best (highest outcome)
for that twin, and a recommendation (the arm with the highest mean). Work is chunked over twins and
vectorised over draws with numpy, so memory is bounded by ``chunk_size × n_draws × n_arms``.

Imports neither dagster nor mlflow.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from twin_pipeline.lib.effects import EffectModel, fit_ensemble

__all__ = ["fit_ensemble", "simulate_draws", "simulate_treatments", "summarize_draws"]

#: Key columns copied from ``X`` to every simulated row of the twin when present.
PASSTHROUGH_COLS = ("person_id", "site_id")


def _check_ensemble(models: Sequence[EffectModel]) -> tuple[tuple[str, ...], list[str]]:
    if not models:
        raise ValueError("the ensemble is empty")
    arms, cols = tuple(models[0].arms), list(models[0].feature_cols)
    for m in models[1:]:
        if tuple(m.arms) != arms or list(m.feature_cols) != cols:
            raise ValueError("ensemble members disagree on arms or feature columns")
    return arms, cols


def simulate_draws(
    predictions: np.ndarray,
    *,
    noise_sd: float,
    n_draws: int,
    rng: np.random.Generator,
    noise_corr: float = 0.0,
) -> np.ndarray:
    """Simulated outcomes, shape (n_draws, n_twins, n_arms), float32, from ensemble predictions.

    ``predictions`` is (n_models, n_twins, n_arms). Draw ``d`` uses member ``d % n_models`` plus Gaussian
    noise with standard deviation ``noise_sd`` (metres); ``noise_corr`` is the correlation of the noise
    between the arms of one twin (0 = independent potential-outcome noise, 1 = shared).
    """
    n_models, n_twins, n_arms = predictions.shape
    member = np.arange(n_draws) % n_models
    draws = predictions.astype(np.float32, copy=False)[member]  # (D, c, K) copy
    if noise_sd > 0:
        noise = rng.standard_normal(size=draws.shape, dtype=np.float32)
        if noise_corr > 0:
            shared = rng.standard_normal(size=(n_draws, n_twins, 1), dtype=np.float32)
            noise *= np.float32(np.sqrt(1.0 - noise_corr))
            noise += np.float32(np.sqrt(noise_corr)) * shared
        noise *= np.float32(noise_sd)
        draws += noise
    return draws


def summarize_draws(draws: np.ndarray) -> dict[str, np.ndarray]:
    """Per twin × arm summaries of draws (n_draws, n_twins, n_arms): mean, p10, p90, prob_best (n_twins, n_arms)."""
    n_draws, n_twins, n_arms = draws.shape
    mean = draws.mean(axis=0, dtype=np.float64)
    p10, p90 = np.quantile(draws, [0.1, 0.9], axis=0)
    best = draws.argmax(axis=2)  # (D, c)
    counts = np.zeros((n_twins, n_arms), dtype=np.int64)
    for k in range(n_arms):
        counts[:, k] = (best == k).sum(axis=0)
    return {
        "mean": mean,
        "p10": p10.astype(np.float64),
        "p90": p90.astype(np.float64),
        "prob_best": counts / n_draws,
    }


def simulate_treatments(
    models: list[EffectModel],
    X: pd.DataFrame,
    *,
    noise_sd: float,
    n_draws: int = 50,
    seed: int = 0,
    chunk_size: int = 50_000,
    noise_corr: float = 0.0,
) -> pd.DataFrame:
    """Simulate every twin in ``X`` under every arm of the ensemble ``models``.

    ``noise_sd`` is the outcome noise (metres; e.g. the out-of-fold RMSE of the outcome models),
    ``n_draws`` the draws per twin, ``noise_corr`` the noise correlation between arms (see
    ``simulate_draws``). Returns one row per twin × arm, twins in ``X`` order and arms in model order:
    ``twin_index`` (row position in ``X``), ``person_id`` / ``site_id`` (when ``X`` has them), ``therapy``, ``mean``,
    ``p10``, ``p90``, ``prob_best`` (sums to 1 over a twin's arms), ``recommended`` (True for the twin's
    arm with the highest mean) and ``recommendation_certainty`` (prob_best of the recommended arm, on
    every row of the twin). ``attrs``: ``n_simulations`` = twins × arms × models, plus ``n_draws``,
    ``noise_sd``, ``seed``. Results are reproducible for a given (seed, chunk_size).
    """
    arms, _ = _check_ensemble(models)
    if n_draws < 1 or chunk_size < 1:
        raise ValueError("n_draws and chunk_size must be at least 1")
    if noise_sd < 0 or not 0.0 <= noise_corr <= 1.0:
        raise ValueError("noise_sd must be >= 0 and noise_corr in [0, 1]")
    n, n_arms, n_models = len(X), len(arms), len(models)
    n_chunks = -(-n // chunk_size)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_chunks)]

    mean = np.empty((n, n_arms))
    p10 = np.empty((n, n_arms))
    p90 = np.empty((n, n_arms))
    prob_best = np.empty((n, n_arms))
    for c in range(n_chunks):
        sl = slice(c * chunk_size, min(n, (c + 1) * chunk_size))
        Xc = X.iloc[sl]
        preds = np.stack([m.predict_outcomes(Xc) for m in models])  # (M, c, K)
        draws = simulate_draws(preds, noise_sd=noise_sd, n_draws=n_draws, rng=rngs[c], noise_corr=noise_corr)
        s = summarize_draws(draws)
        del draws
        mean[sl], p10[sl], p90[sl], prob_best[sl] = s["mean"], s["p10"], s["p90"], s["prob_best"]

    rec = mean.argmax(axis=1)
    recommended = np.zeros((n, n_arms), dtype=bool)
    recommended[np.arange(n), rec] = True
    certainty = prob_best[np.arange(n), rec]
    cols: dict[str, Any] = {"twin_index": np.repeat(np.arange(n, dtype=np.int64), n_arms)}
    for key in PASSTHROUGH_COLS:
        if key in X.columns:
            cols[key] = np.repeat(X[key].to_numpy(), n_arms)
    cols["therapy"] = pd.Categorical.from_codes(np.tile(np.arange(n_arms), n), categories=list(arms))
    cols["mean"] = mean.ravel()
    cols["p10"] = p10.ravel()
    cols["p90"] = p90.ravel()
    cols["prob_best"] = prob_best.ravel()
    cols["recommended"] = recommended.ravel()
    cols["recommendation_certainty"] = np.repeat(certainty, n_arms)
    out = pd.DataFrame(cols)
    out.attrs.update(
        {
            "n_simulations": int(n * n_arms * n_models),
            "n_twins": int(n),
            "n_arms": int(n_arms),
            "n_models": int(n_models),
            "n_draws": int(n_draws),
            "noise_sd": float(noise_sd),
            "noise_corr": float(noise_corr),
            "seed": int(seed),
        }
    )
    return out
