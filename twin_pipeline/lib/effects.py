"""Treatment-effect models for patient twins: T-, DR- and X-learners with shared cross-fitted diagnostics.

Grain: the model-facing twin table has one row per patient, numeric feature columns (NaN allowed),
a categorical treatment column (``therapy``) and a continuous outcome (``outcome_6mwd_90d_m``, the
six-minute walk distance 90 days after baseline, in metres). Treatment is confounded (assigned by
clinicians from the same features), so effects are estimated with

* a **T-learner**: one ``HistGradientBoostingRegressor`` outcome model per arm (native NaN handling);
* a **DR-learner** (EconML ``DRLearner``, multi-valued treatment): cross-fitted outcome + propensity
  nuisances, doubly-robust pseudo-outcomes regressed on the features by one gradient-boosting model per
  contrast; plus the reference-arm outcome model so it predicts outcomes, not only effects;
* an **X-learner** (Kuenzel et al. 2019, multi-arm): imputed individual effects from the other arm's
  outcome model, one effect model per side, blended by the propensity of the two arms;
* a **multinomial propensity model**: ``LogisticRegression`` on median-imputed (+ missing indicators),
  rank-based normal-score transformed, standardised features;
* **AIPW** (augmented inverse-propensity weighting) with cross-fitted nuisances for the average
  treatment effect (ATE) of each arm versus the reference arm, and as the yardstick that ranks the
  estimators without ground truth: ``val_tau_risk`` (doubly-robust tau-risk of out-of-fold effect
  predictions, lower is better, rows outside common support trimmed) and the DR value of each
  estimator's out-of-fold policy.

Every model exposes ``predict_outcomes(X) -> (n, n_arms)``, so simulation, MLflow and evaluation treat
them alike. Everything returned as diagnostics is an aggregate (counts, means, errors), never a patient
row. This module imports neither dagster nor mlflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import QuantileTransformer, StandardScaler
from threadpoolctl import threadpool_limits

ARMS: tuple[str, ...] = ("standard_care", "pulmonary_rehab", "colchicine", "antiviral")
REFERENCE_ARM = "standard_care"
TREATMENT_COL = "therapy"
OUTCOME_COL = "outcome_6mwd_90d_m"

#: Overlap (positivity) rule used for ``n_outside_overlap``: a training row is outside overlap when its
#: cross-fitted propensity for the arm it actually received is below ``OVERLAP_OBSERVED_MIN`` or its
#: propensity for any arm is below ``OVERLAP_ANY_MIN``.
OVERLAP_OBSERVED_MIN = 0.05
OVERLAP_ANY_MIN = 0.01
OVERLAP_RULE = (
    f"propensity of the observed arm < {OVERLAP_OBSERVED_MIN} or propensity of any arm < {OVERLAP_ANY_MIN}"
)
#: Propensities are clipped to at least this value inside the AIPW weights (1 / e); stated so that a
#: reader of the diagnostics knows the estimator is the clipped AIPW.
PROPENSITY_CLIP = 0.01
#: Fewer outcome rows than this in any arm and the T-learner refuses to fit (one model per arm).
MIN_ROWS_PER_ARM = 20

#: Small trees, few of them: per-arm samples are small (hundreds to thousands of rows), and prediction cost
#: (which bounds simulation throughput) grows with trees x depth. On the test cohort this setting gave lower
#: PEHE than 200 trees x 15 leaves at half the prediction cost.
DEFAULT_OUTCOME_PARAMS: dict[str, Any] = {
    "max_iter": 100,
    "learning_rate": 0.1,
    "max_leaf_nodes": 8,
    "min_samples_leaf": 20,
    "l2_regularization": 1.0,
    "early_stopping": False,
}
DEFAULT_PROPENSITY_C = 1.0
#: Below this many rows the gradient-boosting fits/predictions run on one OpenMP thread: on small data the
#: thread barriers cost more than they save, and on a busy 2-core machine they cost 10-50x (measured).
PARALLEL_MIN_ROWS = 20_000


def omp_limit(n_rows: int) -> threadpool_limits:
    """Context manager: one OpenMP thread for fewer than ``PARALLEL_MIN_ROWS`` rows, library default above."""
    return threadpool_limits(limits=1 if n_rows < PARALLEL_MIN_ROWS else None, user_api="openmp")


class OutcomeModel(Protocol):
    """Anything with per-arm outcome predictions (an ``EffectModel`` or a baseline used for comparison)."""

    arms: tuple[str, ...]
    reference_arm: str

    def predict_outcomes(self, X: pd.DataFrame) -> np.ndarray: ...


def feature_matrix(X: pd.DataFrame, feature_cols: Sequence[str]) -> np.ndarray:
    """Return ``X[feature_cols]`` as a float64 array (n, n_features); NaN stays NaN.

    Raises ``KeyError`` for missing columns and ``TypeError`` for non-numeric ones (for example an
    identifier column passed as a feature by mistake). Messages name columns, never values.
    """
    missing = [c for c in feature_cols if c not in X.columns]
    if missing:
        raise KeyError(f"feature columns missing from the frame: {missing}")
    bad = [
        c
        for c in feature_cols
        if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))
    ]
    if bad:
        raise TypeError(f"feature columns must be numeric or boolean; non-numeric: {bad}")
    return X.loc[:, list(feature_cols)].to_numpy(dtype=np.float64, na_value=np.nan)


def _make_outcome_model(seed: int, outcome_params: dict[str, Any] | None) -> HistGradientBoostingRegressor:
    params = {**DEFAULT_OUTCOME_PARAMS, **(outcome_params or {})}
    return HistGradientBoostingRegressor(random_state=seed, **params)


def _make_propensity_model(propensity_c: float, n_rows: int) -> Pipeline:
    # Skewed labs (CRP, troponin, ...) make a linear logit on raw values produce extreme propensities
    # in the tails; a rank-based normal-score transform keeps the logit monotone but bounded.
    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        QuantileTransformer(output_distribution="normal", n_quantiles=max(10, min(1000, n_rows))),
        StandardScaler(),
        LogisticRegression(C=propensity_c, max_iter=2000),
    )


@dataclass
class EffectModel:
    """A fitted T-learner: one outcome model per arm plus a multinomial propensity model.

    ``predict_outcomes`` gives the predicted 90-day outcome (metres) of each arm for each row, columns in
    ``arms`` order; effects are differences to ``reference_arm``. ``metadata`` holds fit-time aggregates
    (row counts per arm, hyper-parameters, library versions), never patient rows.
    """

    feature_cols: list[str]
    arms: tuple[str, ...]
    reference_arm: str
    outcome_models: list[HistGradientBoostingRegressor]
    propensity_model: Pipeline
    treatment_col: str = TREATMENT_COL
    outcome_col: str = OUTCOME_COL
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: str = "t_learner"

    @property
    def reference_index(self) -> int:
        """Column position of the reference arm in ``predict_outcomes``."""
        return self.arms.index(self.reference_arm)

    @property
    def contrast_arms(self) -> tuple[str, ...]:
        """The non-reference arms, in the column order of ``predict_effects``."""
        return tuple(a for a in self.arms if a != self.reference_arm)

    def predict_outcomes(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted outcome per arm, shape (n, n_arms), metres; columns in ``self.arms`` order."""
        Xm = feature_matrix(X, self.feature_cols)
        out = np.empty((Xm.shape[0], len(self.arms)), dtype=np.float64)
        with omp_limit(Xm.shape[0]):
            for k, m in enumerate(self.outcome_models):
                out[:, k] = m.predict(Xm)
        return out

    def predict_effects(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted effect of each non-reference arm vs the reference, shape (n, n_arms - 1), metres."""
        return _contrasts(self.predict_outcomes(X), self.reference_index)

    def propensity(self, X: pd.DataFrame) -> np.ndarray:
        """Estimated probability of receiving each arm given the features, shape (n, n_arms); rows sum to 1."""
        return _propensity_proba(self.propensity_model, feature_matrix(X, self.feature_cols), len(self.arms))


@dataclass
class CateEffectModel(EffectModel):
    """A reference-arm outcome model plus one effect model per contrast (DR-learner, X-learner).

    ``outcome_models`` holds one model, the reference arm's outcome; ``cate_models[j]`` holds the effect
    model(s) of the j-th non-reference arm (``contrast_arms`` order): one model for the DR-learner; two for
    the X-learner, ``[fit on the arm's rows, fit on the reference rows]``, blended with weight
    ``g = e_arm / (e_arm + e_ref)`` on the second (propensities from ``propensity_model``).
    ``predict_outcomes`` = reference outcome + predicted effect, so effects are what the learner estimated.
    """

    cate_models: list[list[Any]] = field(default_factory=list)

    def predict_outcomes(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted outcome per arm, shape (n, n_arms), metres; columns in ``self.arms`` order."""
        Xm = feature_matrix(X, self.feature_cols)
        return self._predict_matrix(Xm)

    def _predict_matrix(self, Xm: np.ndarray) -> np.ndarray:
        ref = self.reference_index
        out = np.empty((Xm.shape[0], len(self.arms)), dtype=np.float64)
        with omp_limit(Xm.shape[0]):
            base = self.outcome_models[0].predict(Xm)
            e = None
            if any(len(ms) == 2 for ms in self.cate_models):
                e = _propensity_proba(self.propensity_model, Xm, len(self.arms))
            out[:, ref] = base
            others = [k for k in range(len(self.arms)) if k != ref]
            for j, k in enumerate(others):
                ms = self.cate_models[j]
                if len(ms) == 1:
                    tau = ms[0].predict(Xm)
                else:
                    g = e[:, k] / np.maximum(e[:, k] + e[:, ref], 1e-12)
                    tau = (1.0 - g) * ms[0].predict(Xm) + g * ms[1].predict(Xm)
                out[:, k] = base + tau
        return out


def _contrasts(outcomes: np.ndarray, ref: int) -> np.ndarray:
    """Columns of ``outcomes`` minus its reference column, reference column dropped."""
    return np.delete(outcomes - outcomes[:, [ref]], ref, axis=1)


def _propensity_proba(model: Pipeline, Xm: np.ndarray, n_arms: int) -> np.ndarray:
    proba = model.predict_proba(Xm)
    out = np.zeros((Xm.shape[0], n_arms), dtype=np.float64)
    out[:, model.classes_.astype(int)] = proba  # classes are arm indices; an absent class keeps 0
    return out


def _training_rows(
    df: pd.DataFrame, treatment_col: str, outcome_col: str, arms: Sequence[str]
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict[str, int]]:
    """Rows usable for fitting: known arm and observed outcome. Returns (rows, arm index, outcome, counts)."""
    for col in (treatment_col, outcome_col):
        if col not in df.columns:
            raise KeyError(f"column {col!r} missing from the twin table")
    treat = df[treatment_col]
    known = treat.notna()
    unknown = sorted(set(treat[known].astype(str)) - set(arms))
    if unknown:
        raise ValueError(f"{treatment_col!r} has values outside the arms {list(arms)}: {unknown}")
    y_all = pd.to_numeric(df[outcome_col], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    has_y = np.isfinite(y_all)
    keep = known.to_numpy() & has_y
    counts = {
        "n_rows": int(len(df)),
        "n_excluded_no_treatment": int((~known).sum()),
        "n_excluded_no_outcome": int((known.to_numpy() & ~has_y).sum()),
    }
    rows = df.loc[keep]
    t = pd.Categorical(rows[treatment_col].astype(str), categories=list(arms)).codes.astype(np.int64)
    return rows, t, y_all[keep], counts


def _fit_arrays(
    Xm: np.ndarray,
    t: np.ndarray,
    y: np.ndarray,
    n_arms: int,
    seed: int,
    outcome_params: dict[str, Any] | None,
    propensity_c: float,
) -> tuple[list[HistGradientBoostingRegressor], Pipeline]:
    outcome_models = []
    for k in range(n_arms):
        m = _make_outcome_model(seed + k, outcome_params)
        with omp_limit(int((t == k).sum())):
            m.fit(Xm[t == k], y[t == k])
        outcome_models.append(m)
    prop = _make_propensity_model(propensity_c, len(y))
    prop.fit(Xm, t)
    return outcome_models, prop


def fit_effect_model(
    df: pd.DataFrame,
    feature_cols: Sequence[str],
    *,
    treatment_col: str = TREATMENT_COL,
    outcome_col: str = OUTCOME_COL,
    arms: Sequence[str] = ARMS,
    reference_arm: str = REFERENCE_ARM,
    seed: int = 0,
    outcome_params: dict[str, Any] | None = None,
    propensity_c: float = DEFAULT_PROPENSITY_C,
) -> EffectModel:
    """Fit a T-learner on all usable rows (known arm, observed outcome) without cross-fitted diagnostics.

    ``outcome_params`` override ``DEFAULT_OUTCOME_PARAMS`` of the per-arm gradient-boosting models;
    ``propensity_c`` is the inverse L2 strength of the propensity model. Raises ``ValueError`` when an arm
    has fewer than ``MIN_ROWS_PER_ARM`` training rows.
    """
    arms = tuple(arms)
    if reference_arm not in arms:
        raise ValueError(f"reference arm {reference_arm!r} is not one of {list(arms)}")
    rows, t, y, counts = _training_rows(df, treatment_col, outcome_col, arms)
    n_per_arm = np.bincount(t, minlength=len(arms))
    thin = [a for a, n in zip(arms, n_per_arm) if n < MIN_ROWS_PER_ARM]
    if thin:
        raise ValueError(
            f"arms with fewer than {MIN_ROWS_PER_ARM} rows having an observed outcome: {thin}"
        )
    Xm = feature_matrix(rows, feature_cols)
    outcome_models, prop = _fit_arrays(Xm, t, y, len(arms), seed, outcome_params, propensity_c)
    metadata = {
        **counts,
        "n_train": int(len(y)),
        "n_per_arm": {a: int(n) for a, n in zip(arms, n_per_arm)},
        "seed": int(seed),
        "outcome_model": "HistGradientBoostingRegressor",
        "outcome_params": {**DEFAULT_OUTCOME_PARAMS, **(outcome_params or {})},
        "propensity_model": (
            "LogisticRegression(multinomial) on median-imputed (+ missing indicators), normal-score, scaled features"
        ),
        "propensity_c": float(propensity_c),
        "sklearn_version": sklearn.__version__,
    }
    return EffectModel(
        feature_cols=list(feature_cols),
        arms=arms,
        reference_arm=reference_arm,
        outcome_models=outcome_models,
        propensity_model=prop,
        treatment_col=treatment_col,
        outcome_col=outcome_col,
        metadata=metadata,
    )


def fit_ensemble(
    df: pd.DataFrame,
    feature_cols: Sequence[str],
    *,
    n_models: int = 5,
    seed: int = 0,
    treatment_col: str = TREATMENT_COL,
    outcome_col: str = OUTCOME_COL,
    arms: Sequence[str] = ARMS,
    **kw: Any,
) -> list[EffectModel]:
    """Fit ``n_models`` T-learners on bootstrap resamples of the usable rows (known arm, observed outcome).

    Resampling is stratified by arm (each arm keeps its row count), so every member sees every arm. Member
    ``i`` uses seed ``seed + i`` for resampling and model fitting. ``kw`` is passed on to
    ``fit_effect_model`` (``reference_arm``, ``outcome_params``, ``propensity_c``).
    """
    if n_models < 1:
        raise ValueError("n_models must be at least 1")
    usable = df[df[treatment_col].isin(list(arms)) & df[outcome_col].notna()]
    groups = [np.flatnonzero((usable[treatment_col] == a).to_numpy()) for a in arms]
    models = []
    for i in range(n_models):
        rng = np.random.default_rng(seed + i)
        pick = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups if len(g)])
        sample = usable.iloc[np.sort(pick)]
        m = fit_effect_model(
            sample,
            feature_cols,
            treatment_col=treatment_col,
            outcome_col=outcome_col,
            arms=arms,
            seed=seed + i,
            **kw,
        )
        m.metadata["bootstrap_member"] = i
        models.append(m)
    return models


def overlap_flags(propensities: np.ndarray, observed_arm: np.ndarray) -> np.ndarray:
    """Boolean per row: outside overlap by ``OVERLAP_RULE``.

    ``propensities`` is (n, n_arms); ``observed_arm`` holds the column index of the arm each row received.
    """
    e_obs = propensities[np.arange(len(observed_arm)), observed_arm]
    return (e_obs < OVERLAP_OBSERVED_MIN) | (propensities.min(axis=1) < OVERLAP_ANY_MIN)


def aipw_scores(mu: np.ndarray, e: np.ndarray, t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AIPW pseudo-outcomes per row and arm, shape (n, n_arms), metres.

    ``psi[i, k] = mu[i, k] + 1{t_i = k} (y_i - mu[i, k]) / max(e[i, k], PROPENSITY_CLIP)``; the mean of
    a column estimates the mean outcome had everyone received that arm.
    """
    n, n_arms = mu.shape
    psi = mu.copy()
    idx = np.arange(n)
    psi[idx, t] += (y - mu[idx, t]) / np.maximum(e[idx, t], PROPENSITY_CLIP)
    return psi


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(len(x)))


def fit_t_learner(
    df: pd.DataFrame,
    feature_cols: Sequence[str],
    *,
    treatment_col: str = TREATMENT_COL,
    outcome_col: str = OUTCOME_COL,
    arms: Sequence[str] = ARMS,
    reference_arm: str = REFERENCE_ARM,
    seed: int = 0,
    n_folds: int = 5,
    outcome_params: dict[str, Any] | None = None,
    propensity_c: float = DEFAULT_PROPENSITY_C,
) -> tuple[EffectModel, dict[str, float]]:
    """Fit the T-learner on all usable rows and compute cross-fitted diagnostics.

    Rows without a therapy or without an observed outcome are excluded (counted in the diagnostics).
    Nuisances (per-arm outcome models and the propensity model) are cross-fitted over ``n_folds``
    folds stratified by arm; every diagnostic below uses only out-of-fold predictions.

    Returns ``(model, diagnostics)``; ``diagnostics`` is a flat dict of numbers (MLflow-ready), outcomes
    in metres:

    * ``n_rows``, ``n_train``, ``n_excluded_no_treatment``, ``n_excluded_no_outcome``, ``n_train_<arm>``;
    * ``oof_r2_<arm>``, ``oof_rmse_<arm>``: out-of-fold outcome-model fit on that arm's rows;
    * ``propensity_min``, ``propensity_max``: over all rows and arms (out-of-fold);
    * ``n_outside_overlap``, ``frac_outside_overlap``: rows outside overlap by ``OVERLAP_RULE``;
    * ``dr_ate_<arm>``, ``dr_ate_se_<arm>``: AIPW ATE of each non-reference arm vs the reference, with
      its standard error (propensities clipped at ``PROPENSITY_CLIP``);
    * ``naive_ate_<arm>``: unadjusted difference in mean outcome vs the reference (for comparison);
    * ``dr_policy_value_model`` (+ ``_se``): AIPW value of giving each patient the arm with the highest
      out-of-fold predicted outcome; ``dr_policy_value_observed``: mean observed outcome (the value of
      observed practice); ``dr_policy_value_<arm>``: everyone gets that arm; ``dr_policy_gain``
      (+ ``_se``): model policy minus observed practice.
    """
    arms = tuple(arms)
    model = fit_effect_model(
        df,
        feature_cols,
        treatment_col=treatment_col,
        outcome_col=outcome_col,
        arms=arms,
        reference_arm=reference_arm,
        seed=seed,
        outcome_params=outcome_params,
        propensity_c=propensity_c,
    )
    rows, t, y, counts = _training_rows(df, treatment_col, outcome_col, arms)
    Xm = feature_matrix(rows, feature_cols)
    n, n_arms = len(y), len(arms)
    ref = arms.index(reference_arm)

    mu = np.empty((n, n_arms))
    e = np.empty((n, n_arms))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for f, (tr, te) in enumerate(folds.split(Xm, t)):
        om, pm = _fit_arrays(Xm[tr], t[tr], y[tr], n_arms, seed + 100 * (f + 1), outcome_params, propensity_c)
        with omp_limit(len(te)):
            for k in range(n_arms):
                mu[te, k] = om[k].predict(Xm[te])
        e[te] = _propensity_proba(pm, Xm[te], n_arms)

    diag: dict[str, float] = {**{k: float(v) for k, v in counts.items()}, "n_train": float(n)}
    for k, a in enumerate(arms):
        diag[f"n_train_{a}"] = float((t == k).sum())
    for k, a in enumerate(arms):
        yk, pk = y[t == k], mu[t == k, k]
        sse = float(np.sum((yk - pk) ** 2))
        sst = float(np.sum((yk - yk.mean()) ** 2))
        diag[f"oof_r2_{a}"] = 1.0 - sse / sst if sst > 0 else float("nan")
        diag[f"oof_rmse_{a}"] = float(np.sqrt(sse / len(yk)))
    diag["propensity_min"] = float(e.min())
    diag["propensity_max"] = float(e.max())
    outside = overlap_flags(e, t)
    diag["n_outside_overlap"] = float(outside.sum())
    diag["frac_outside_overlap"] = float(outside.mean())

    psi = aipw_scores(mu, e, t, y)
    for k, a in enumerate(arms):
        if k == ref:
            continue
        diag[f"dr_ate_{a}"], diag[f"dr_ate_se_{a}"] = _mean_se(psi[:, k] - psi[:, ref])
        diag[f"naive_ate_{a}"] = float(y[t == k].mean() - y[t == ref].mean())
    best = mu.argmax(axis=1)
    psi_policy = psi[np.arange(n), best]
    diag["dr_policy_value_model"], diag["dr_policy_value_model_se"] = _mean_se(psi_policy)
    diag["dr_policy_value_observed"] = float(y.mean())
    diag["dr_policy_gain"], diag["dr_policy_gain_se"] = _mean_se(psi_policy - y)
    for k, a in enumerate(arms):
        diag[f"dr_policy_value_{a}"] = float(psi[:, k].mean())
    for k, a in enumerate(arms):
        diag[f"frac_recommended_{a}"] = float((best == k).mean())
    diag["n_folds"] = float(n_folds)
    model.metadata["overlap_rule"] = OVERLAP_RULE
    model.metadata["n_folds"] = int(n_folds)
    return model, diag


def evaluate_against_truth(
    model: OutcomeModel,
    X: pd.DataFrame,
    true_outcomes: np.ndarray,
    *,
    treatment_col: str = TREATMENT_COL,
) -> dict[str, float]:
    """Compare a model with known potential outcomes (synthetic data only).

    ``true_outcomes`` is (n, n_arms) in ``model.arms`` order (noise-free expected outcome or realised
    potential outcome, metres). Returns a flat dict: ``pehe_<arm>`` (root mean squared error of the
    predicted vs true effect vs the reference), ``ate_error_<arm>`` (mean predicted minus mean true
    effect), ``policy_value_model`` / ``policy_value_oracle`` (mean true outcome when each row gets the
    model's / the truly best arm), ``regret`` (oracle minus model), ``policy_accuracy`` (share of rows
    where the model picks the truly best arm) and, when ``X`` has ``treatment_col``, the observed-practice
    value ``policy_value_observed`` over rows with a known arm.
    """
    truth = np.asarray(true_outcomes, dtype=np.float64)
    arms = tuple(model.arms)
    if truth.shape != (len(X), len(arms)):
        raise ValueError(f"true_outcomes must have shape {(len(X), len(arms))}, got {truth.shape}")
    ref = arms.index(model.reference_arm)
    pred = np.asarray(model.predict_outcomes(X), dtype=np.float64)
    pe, te = _contrasts(pred, ref), _contrasts(truth, ref)
    out: dict[str, float] = {}
    for j, a in enumerate(a for a in arms if a != model.reference_arm):
        out[f"pehe_{a}"] = float(np.sqrt(np.mean((pe[:, j] - te[:, j]) ** 2)))
        out[f"ate_error_{a}"] = float(pe[:, j].mean() - te[:, j].mean())
    idx = np.arange(len(X))
    chosen, oracle = pred.argmax(axis=1), truth.argmax(axis=1)
    out["policy_value_model"] = float(truth[idx, chosen].mean())
    out["policy_value_oracle"] = float(truth[idx, oracle].mean())
    out["regret"] = out["policy_value_oracle"] - out["policy_value_model"]
    out["policy_accuracy"] = float((chosen == oracle).mean())
    if treatment_col in X.columns:
        known = X[treatment_col].notna().to_numpy()
        obs = pd.Categorical(X.loc[known, treatment_col].astype(str), categories=list(arms)).codes
        if (obs < 0).any():
            raise ValueError(f"{treatment_col!r} has values outside the arms {list(arms)}")
        out["policy_value_observed"] = float(truth[idx[known], obs].mean())
    return out
