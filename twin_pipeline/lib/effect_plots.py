"""Diagnostic figures for one fitted estimator (matplotlib, Agg backend): aggregates only, no patient points.

* ``qini``: doubly-robust Qini (uplift) curve per contrast — gain of treating the top fraction by predicted
  effect, against random targeting;
* ``calibration``: predicted effect vs mean DR pseudo-effect in deciles of the predicted effect (binned,
  never one point per patient), plus the out-of-fold outcome-model calibration by decile;
* ``effect_distribution``: histogram of predicted effects per contrast;
* ``feature_importance``: permutation importance on the predicted effects (mean absolute change of the
  predicted effect when one feature is shuffled), model-agnostic so estimators compare.

No dagster, no mlflow: returns ``matplotlib.figure.Figure`` objects the caller logs and closes.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from twin_pipeline.lib.effects import CrossFit, EffectModel, _contrasts, qini_curve  # noqa: E402

#: Bins with fewer rows than this are not drawn (small-cell rule for plotted aggregates).
MIN_BIN_ROWS = 5


def _contrast_names(cf: CrossFit) -> list[str]:
    return [a for a in cf.arms if a != cf.reference_arm]


def qini_figure(pred_effect: np.ndarray, cf: CrossFit) -> Figure:
    """DR Qini curves (rows inside common support), one panel per contrast."""
    keep = ~cf.outside
    pseudo = cf.pseudo_effects()
    names = _contrast_names(cf)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4), squeeze=False)
    for j, (ax, a) in enumerate(zip(axes[0], names)):
        q, gain = qini_curve(pred_effect[keep, j], pseudo[keep, j])
        ax.plot(q, gain, marker="o", ms=3, label="model ranking")
        ax.plot([0, 1], [0, gain[-1]], ls="--", color="grey", label="random")
        ax.set_title(f"{a} vs {cf.reference_arm}")
        ax.set_xlabel("fraction treated (top by predicted effect)")
        ax.set_ylabel("DR gain per patient (m)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _binned(x: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    xs, ys = [], []
    for chunk in np.array_split(order, min(n_bins, max(1, len(order) // MIN_BIN_ROWS))):
        if len(chunk) >= MIN_BIN_ROWS:
            xs.append(x[chunk].mean())
            ys.append(y[chunk].mean())
    return np.array(xs), np.array(ys)


def calibration_figure(oof_outcomes: np.ndarray, cf: CrossFit, n_bins: int = 10) -> Figure:
    """Binned calibration: effects (pred vs DR pseudo-effect) per contrast, and observed-arm outcomes."""
    keep = ~cf.outside
    pred_eff, pseudo = _contrasts(oof_outcomes, cf.ref), cf.pseudo_effects()
    names = _contrast_names(cf)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 3.4), squeeze=False)
    for j, (ax, a) in enumerate(zip(axes[0], names)):
        x, y = _binned(pred_eff[keep, j], pseudo[keep, j], n_bins)
        ax.plot(x, y, marker="o")
        lo, hi = (min(x.min(), y.min()), max(x.max(), y.max())) if len(x) else (0, 1)
        ax.plot([lo, hi], [lo, hi], ls="--", color="grey")
        ax.set_title(f"effect: {a}")
        ax.set_xlabel("predicted effect (m, decile mean)")
        ax.set_ylabel("DR pseudo-effect (m)")
    ax = axes[0][-1]
    obs_pred = oof_outcomes[np.arange(len(cf.y)), cf.t]
    x, y = _binned(obs_pred, cf.y, n_bins)
    ax.plot(x, y, marker="o")
    if len(x):
        ax.plot([x.min(), x.max()], [x.min(), x.max()], ls="--", color="grey")
    ax.set_title("outcome, received arm")
    ax.set_xlabel("predicted 6MWD (m)")
    ax.set_ylabel("observed 6MWD (m)")
    fig.tight_layout()
    return fig


def effect_distribution_figure(pred_effect: np.ndarray, cf: CrossFit) -> Figure:
    """Histogram of predicted effects per contrast (all training rows)."""
    names = _contrast_names(cf)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for j, a in enumerate(names):
        ax.hist(pred_effect[:, j], bins=30, alpha=0.5, label=a)
    ax.axvline(0, color="grey", ls="--")
    ax.set_xlabel(f"predicted effect vs {cf.reference_arm} (m)")
    ax.set_ylabel("patients")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def permutation_importance(model: EffectModel, Xm: np.ndarray, *, seed: int = 0, max_rows: int = 2000) -> np.ndarray:
    """Mean absolute change of the predicted effects (all contrasts) when each feature is shuffled, (n_features,)."""
    rng = np.random.default_rng(seed)
    if len(Xm) > max_rows:
        Xm = Xm[rng.choice(len(Xm), max_rows, replace=False)]
    base = _contrasts(model._predict_matrix(Xm), model.reference_index)
    out = np.zeros(Xm.shape[1])
    for c in range(Xm.shape[1]):
        Xp = Xm.copy()
        Xp[:, c] = Xp[rng.permutation(len(Xp)), c]
        out[c] = float(np.mean(np.abs(_contrasts(model._predict_matrix(Xp), model.reference_index) - base)))
    return out


def feature_importance_figure(importance: np.ndarray, feature_cols: list[str]) -> Figure:
    """Horizontal bar chart of ``permutation_importance``."""
    order = np.argsort(importance)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(feature_cols) + 1.2))
    ax.barh(np.array(feature_cols)[order], importance[order])
    ax.set_xlabel("mean |change in predicted effect| when shuffled (m)")
    fig.tight_layout()
    return fig


def estimator_figures(model: EffectModel, oof_outcomes: np.ndarray, cf: CrossFit, *, seed: int = 0) -> dict[str, Figure]:
    """All four figures for one estimator, keyed by artifact name (``plots/<name>.png``)."""
    pred_eff = _contrasts(oof_outcomes, cf.ref)
    imp = permutation_importance(model, cf.Xm, seed=seed)
    return {
        "qini": qini_figure(pred_eff, cf),
        "calibration": calibration_figure(oof_outcomes, cf),
        "effect_distribution": effect_distribution_figure(pred_eff, cf),
        "feature_importance": feature_importance_figure(imp, list(model.feature_cols)),
    }
