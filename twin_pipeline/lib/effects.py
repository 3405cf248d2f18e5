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
* a **multinomial propensity model**: an L2-penalised multinomial logit on median-imputed (+ missing
  indicators) features, either linear in their normal scores or additive in quadratic B-splines of the
  ranks of the continuous ones; specification and penalty are chosen per data set by cross-validated
  log loss (``select_propensity_model``; see "Propensity model" below);
* **AIPW** (augmented inverse-propensity weighting) with cross-fitted nuisances for the average
  treatment effect (ATE) of each arm versus the reference arm, and as the yardstick that ranks the
  estimators without ground truth: ``val_tau_risk`` (doubly-robust tau-risk of out-of-fold effect
  predictions, lower is better, rows outside common support trimmed) and the DR value of each
  estimator's out-of-fold policy.

Propensity model (issue #8). The propensity model used to be the linear logit with a fixed ``C = 1``.
At one hospital's size (600-2,500 patients; 3-fold cross-fitting leaves 400-1,700 training rows for
about 35 columns) it over-fitted: out-of-fold propensities went down to 0.0004 where the generator's
true propensity is never below 0.0375 (a 15 % uniform mixture), the inverse-propensity weights of an
arm summed to typically 10-40 % (up to 2x) more than the rows although ``E[1{T=k} / e_k] = 1``, and
single rows hit the weight cap of 100 (the clip) instead of ~25. Those weights multiply the outcome
models' residuals, which are not centred where an arm is rare: the per-arm gradient-boosting models
extrapolate flat (the cross-fitted rehab model underpredicted by ~7 m on average over all patients).
AIPW is only first-order insensitive to nuisance error; its bias is the product term
``E[(e / ê - 1)(μ - μ̂)]``, and with both errors large it was not small: over 24 generated sites of ~900
analysed patients +10.5 m for rehab and +4.5 m for the antiviral (mean z 0.8 / 0.7), over 52
pipeline-built sites +7 to +21 m for rehab. It was an estimation problem, not an AIPW defect: with the
generator's true propensity and the fitted outcome models the per-site bias was +0.3 to +2.0 m, with
the true outcome means and the fitted propensity -0.1 to +0.9 m. Five folds instead of three did not
help (+16 m for rehab on the pipeline sites); a higher clip (0.05) removed most of it but left +3.0 to
+3.6 m (mean z 0.4-0.65) and changes the estimand. The remedy is the standard one: a regularised, more
flexible propensity model chosen by out-of-sample fit. Candidates are the old linear logit and an
additive spline logit (it can follow thresholds such as "infection within 150 days" and the flat tails
of a mixture), each over ``PROPENSITY_C_GRID``; the pair with the lowest cross-validated multinomial log
loss wins (a discrete super learner), selected once on the rows being analysed (tuning on the whole
sample, then cross-fitting, as DoubleML does by default) and held fixed across folds and estimators.
The linear candidate stays because a penalised spline logit cannot express a deterministic rule (a
protocol flag that always means colchicine) as sharply; where such a rule dominates the log loss the
linear logit wins and the positivity violation is still flagged. The clip (``PROPENSITY_CLIP``) is
unchanged and rarely binds now. After the change (``benchmarks/effect_quality.py --sizes --site-probe
4x6x1000``): per-site mean error +1.0 / +1.4 / +2.2 m (rehab / colchicine / antiviral; before +10.5 /
+0.2 / +4.5), RMSE 5.9 / 5.1 / 4.4 m (before 15.5 / 7.3 / 7.3), mean z 0.04 / 0.26 / 0.50, 95 % CI
coverage 0.92-0.96; on the 52 pipeline-built sites -1.8 to +1.1 m. What is left of the antiviral bias
comes from the propensity side (+0.4 m with the true propensity); a likely part is the 150-day threshold
of the antiviral assignment, which splines on the rank scale smooth. ``propensity_spec`` /
``propensity_c`` fix the model when given.

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
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import QuantileTransformer, SplineTransformer, StandardScaler
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
#: Propensity model specifications (feature maps of the multinomial logit; see ``_propensity_steps``):
#: ``linear`` = normal scores of the features (the pre-#8 model), ``spline`` = additive quadratic
#: B-splines of the ranks of the continuous features, binary columns as they are.
PROPENSITY_SPECS: tuple[str, ...] = ("linear", "spline")
PROPENSITY_SPEC_DESCRIPTION = {
    "linear": "LogisticRegression(multinomial, L2) on median-imputed (+ missing indicators), normal-score, "
              "scaled features",
    "spline": "LogisticRegression(multinomial, L2) on quadratic B-splines (4 knots) of the ranks of the "
              "continuous features + binary columns, median-imputed (+ missing indicators), scaled",
}
#: ``None`` = choose the propensity specification and/or its inverse L2 strength by cross-validated
#: multinomial log loss (``select_propensity_model``); a value fixes it.
DEFAULT_PROPENSITY_C: float | None = None
DEFAULT_PROPENSITY_SPEC: str | None = None
#: Candidate inverse L2 strengths (scikit-learn ``C``: penalty ½‖w‖² against the *summed* log loss).
PROPENSITY_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-3, 1, 9))
#: Inner folds of the selection (stratified by arm).
PROPENSITY_CV_FOLDS = 3
#: Boundary + interior knots of each continuous feature's quadratic B-spline (on its rank scale, 0-1):
#: 5 basis functions, enough for a threshold or a plateau, few enough for a few hundred rows per arm.
PROPENSITY_SPLINE_KNOTS = 4
#: Below this many rows the gradient-boosting fits/predictions run on one OpenMP thread: on small data the
#: thread barriers cost more than they save, and on a busy 2-core machine they cost 10-50x (measured).
PARALLEL_MIN_ROWS = 20_000

#: The estimators ``fit_model`` / ``fit_estimators`` know, and the effect model each uses.
ESTIMATORS: tuple[str, ...] = ("t_learner", "dr_learner", "x_learner")
ESTIMATOR_CATE_MODEL = {
    "t_learner": "none (difference of per-arm outcome models)",
    "dr_learner": "econml.dr.DRLearner final model: HistGradientBoostingRegressor per contrast",
    "x_learner": "HistGradientBoostingRegressor per contrast and side, propensity-blended",
}
#: Effect (CATE) models regress noisy pseudo-outcomes: more regularised than the outcome models.
DEFAULT_CATE_PARAMS: dict[str, Any] = {
    "max_iter": 100,
    "learning_rate": 0.05,
    "max_leaf_nodes": 8,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": False,
}
#: The validation metric that ranks estimators and gates the champion (lower is better).
VALIDATION_METRIC = "val_tau_risk"


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


class NanSafeHGBRegressor(HistGradientBoostingRegressor):
    """``HistGradientBoostingRegressor`` that also fits when a feature is NaN on every training row.

    (scikit-learn's binning fails on an all-NaN column, which happens when a site has no source for a
    feature, or an arm's rows all lack it.) Such columns are set to 0 for fitting: constant, never split
    on, so predictions ignore them.
    """

    def fit(self, X, y, sample_weight=None, **kw):  # noqa: D102 - same contract as the parent
        X = np.asarray(X, dtype=np.float64)
        empty = np.isnan(X).all(axis=0)
        if empty.any():
            X = X.copy()
            X[:, empty] = 0.0
        return super().fit(X, y, sample_weight=sample_weight, **kw)


def _make_outcome_model(seed: int, outcome_params: dict[str, Any] | None) -> HistGradientBoostingRegressor:
    params = {**DEFAULT_OUTCOME_PARAMS, **(outcome_params or {})}
    return NanSafeHGBRegressor(random_state=seed, **params)


class RankSplineFeatures(TransformerMixin, BaseEstimator):
    """Additive spline basis for a logit: each column with more than two distinct values becomes
    ``PROPENSITY_SPLINE_KNOTS + 1`` quadratic B-splines of its rank (0-1, so skewed labs cannot produce
    extreme logits); binary and constant columns pass through unchanged. Input without NaN (impute first).
    """

    def __init__(self, n_knots: int = PROPENSITY_SPLINE_KNOTS):
        self.n_knots = n_knots

    def fit(self, X, y=None):  # noqa: D102 - scikit-learn transformer contract
        X = np.asarray(X, dtype=np.float64)
        self.continuous_ = np.array([np.unique(X[:, j]).size > 2 for j in range(X.shape[1])], dtype=bool)
        if self.continuous_.any():
            xc = X[:, self.continuous_]
            self.ranks_ = QuantileTransformer(output_distribution="uniform",
                                              n_quantiles=max(2, min(1000, len(X)))).fit(xc)
            self.splines_ = SplineTransformer(n_knots=self.n_knots, degree=2).fit(self.ranks_.transform(xc))
        return self

    def transform(self, X):  # noqa: D102
        X = np.asarray(X, dtype=np.float64)
        parts = [X[:, ~self.continuous_]]
        if self.continuous_.any():
            parts.append(self.splines_.transform(self.ranks_.transform(X[:, self.continuous_])))
        return np.hstack(parts)


def _propensity_steps(spec: str, n_rows: int) -> list[Any]:
    """Feature map of propensity specification ``spec`` (``PROPENSITY_SPECS``), standardised at the end."""
    impute = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
    if spec == "linear":
        # a rank-based normal-score transform keeps the logit monotone but bounded for skewed labs
        return [impute, QuantileTransformer(output_distribution="normal", n_quantiles=max(10, min(1000, n_rows))),
                StandardScaler()]
    if spec == "spline":
        return [impute, RankSplineFeatures(), StandardScaler()]
    raise ValueError(f"unknown propensity specification {spec!r}; choose one of {list(PROPENSITY_SPECS)}")


def _make_propensity_model(propensity: tuple[str, float], n_rows: int) -> Pipeline:
    spec, c = propensity
    return make_pipeline(*_propensity_steps(spec, n_rows), LogisticRegression(C=float(c), max_iter=3000))


def select_propensity_model(
    Xm: np.ndarray,
    t: np.ndarray,
    *,
    seed: int = 0,
    specs: Sequence[str] = PROPENSITY_SPECS,
    grid: Sequence[float] = PROPENSITY_C_GRID,
    n_folds: int = PROPENSITY_CV_FOLDS,
) -> tuple[str, float]:
    """The ``(specification, C)`` of the propensity model with the lowest ``n_folds``-fold cross-validated
    multinomial log loss over ``specs`` × ``grid`` (a discrete super learner; folds stratified by arm and
    shuffled with ``seed``; ties: earlier specification, smaller ``C``).

    ``Xm`` (n, n_features) feature matrix, ``t`` arm index per row. Feature maps are refitted inside every
    fold; along the grid the fits are warm-started (increasing ``C``). Returns plain ``(str, float)``.
    """
    specs, grid = list(specs), sorted(float(c) for c in grid)
    n_arms = int(t.max()) + 1
    loss = np.zeros((len(specs), len(grid)))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(Xm, t)
    for tr, te in folds:
        for i, spec in enumerate(specs):
            feats = make_pipeline(*_propensity_steps(spec, len(tr))).fit(Xm[tr])
            z_tr, z_te = feats.transform(Xm[tr]), feats.transform(Xm[te])
            clf = LogisticRegression(max_iter=3000, warm_start=True)
            for j, c in enumerate(grid):
                clf.set_params(C=c).fit(z_tr, t[tr])
                proba = np.zeros((len(te), n_arms))
                proba[:, clf.classes_.astype(int)] = clf.predict_proba(z_te)
                loss[i, j] -= np.sum(np.log(np.clip(proba[np.arange(len(te)), t[te]], 1e-15, None)))
    i, j = np.unravel_index(int(np.argmin(loss)), loss.shape)
    return specs[i], grid[j]


def _resolve_propensity(
    propensity_spec: str | None, propensity_c: float | None, Xm: np.ndarray, t: np.ndarray, seed: int
) -> tuple[tuple[str, float], str]:
    """The ``(specification, C)`` to fit: given values are kept, missing ones selected by
    ``select_propensity_model`` on these rows. Returns it with a note of how it was chosen."""
    if propensity_spec is not None and propensity_spec not in PROPENSITY_SPECS:
        raise ValueError(
            f"unknown propensity specification {propensity_spec!r}; choose one of {list(PROPENSITY_SPECS)}"
        )
    if propensity_c is not None and not propensity_c > 0:
        raise ValueError(f"propensity_c must be positive, got {propensity_c}")
    if propensity_spec is not None and propensity_c is not None:
        return (propensity_spec, float(propensity_c)), "fixed"
    choice = select_propensity_model(
        Xm, t, seed=seed, specs=PROPENSITY_SPECS if propensity_spec is None else [propensity_spec],
        grid=PROPENSITY_C_GRID if propensity_c is None else [propensity_c],
    )
    return choice, f"{PROPENSITY_CV_FOLDS}-fold cross-validated log loss"


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
        return self._predict_matrix(feature_matrix(X, self.feature_cols))

    def _predict_matrix(self, Xm: np.ndarray) -> np.ndarray:
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
    propensity: tuple[str, float],
) -> tuple[list[HistGradientBoostingRegressor], Pipeline]:
    outcome_models = []
    for k in range(n_arms):
        m = _make_outcome_model(seed + k, outcome_params)
        with omp_limit(int((t == k).sum())):
            m.fit(Xm[t == k], y[t == k])
        outcome_models.append(m)
    prop = _make_propensity_model(propensity, len(y))
    prop.fit(Xm, t)
    return outcome_models, prop


def _fit_model_arrays(
    estimator: str,
    Xm: np.ndarray,
    t: np.ndarray,
    y: np.ndarray,
    arms: tuple[str, ...],
    reference_arm: str,
    feature_cols: Sequence[str],
    *,
    seed: int,
    outcome_params: dict[str, Any] | None,
    propensity: tuple[str, float],
    cate_params: dict[str, Any] | None = None,
    dr_cv: int = 2,
    treatment_col: str = TREATMENT_COL,
    outcome_col: str = OUTCOME_COL,
) -> EffectModel:
    """Fit one estimator on arrays (rows already filtered, ``t`` = arm index in ``arms``); ``propensity`` =
    ``(specification, C)`` of the propensity model."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {list(ESTIMATORS)}")
    n_arms, ref = len(arms), arms.index(reference_arm)
    common = dict(
        feature_cols=list(feature_cols), arms=arms, reference_arm=reference_arm,
        treatment_col=treatment_col, outcome_col=outcome_col, kind=estimator,
    )
    others = [k for k in range(n_arms) if k != ref]
    if estimator == "t_learner":
        outcome_models, prop = _fit_arrays(Xm, t, y, n_arms, seed, outcome_params, propensity)
        return EffectModel(outcome_models=outcome_models, propensity_model=prop, **common)
    if estimator == "x_learner":
        outcome_models, prop = _fit_arrays(Xm, t, y, n_arms, seed, outcome_params, propensity)
        cates = []
        with omp_limit(len(y)):
            for k in others:
                on_k, on_ref = t == k, t == ref
                d_k = y[on_k] - outcome_models[ref].predict(Xm[on_k])  # imputed effects on the arm's rows
                d_ref = outcome_models[k].predict(Xm[on_ref]) - y[on_ref]  # ... and on the reference rows
                m_k = _make_cate_model(seed + 10 + k, cate_params).fit(Xm[on_k], d_k)
                m_ref = _make_cate_model(seed + 20 + k, cate_params).fit(Xm[on_ref], d_ref)
                cates.append([m_k, m_ref])
        return CateEffectModel(outcome_models=[outcome_models[ref]], propensity_model=prop, cate_models=cates,
                               **common)
    # dr_learner: EconML DRLearner; the first category is the control, so the reference arm goes first.
    import warnings

    from econml.dr import DRLearner

    dr = DRLearner(
        model_propensity=_make_propensity_model(propensity, len(y)),
        model_regression=_make_outcome_model(seed, outcome_params),
        model_final=_make_cate_model(seed + 1, cate_params),
        categories=[ref] + others,
        cv=dr_cv,
        min_propensity=PROPENSITY_CLIP,
        random_state=seed,
        allow_missing=True,
    )
    with omp_limit(len(y)), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dr.fit(y, t, X=Xm)
        base = _make_outcome_model(seed + 2, outcome_params).fit(Xm[t == ref], y[t == ref])
    prop = _make_propensity_model(propensity, len(y)).fit(Xm, t)
    cates = [[dr.model_cate(T=k)] for k in others]
    return CateEffectModel(outcome_models=[base], propensity_model=prop, cate_models=cates, **common)


def _make_cate_model(seed: int, cate_params: dict[str, Any] | None) -> HistGradientBoostingRegressor:
    return NanSafeHGBRegressor(random_state=seed, **{**DEFAULT_CATE_PARAMS, **(cate_params or {})})


def fit_model(
    df: pd.DataFrame,
    feature_cols: Sequence[str],
    *,
    estimator: str = "t_learner",
    treatment_col: str = TREATMENT_COL,
    outcome_col: str = OUTCOME_COL,
    arms: Sequence[str] = ARMS,
    reference_arm: str = REFERENCE_ARM,
    seed: int = 0,
    outcome_params: dict[str, Any] | None = None,
    propensity_c: float | None = DEFAULT_PROPENSITY_C,
    cate_params: dict[str, Any] | None = None,
    propensity_spec: str | None = DEFAULT_PROPENSITY_SPEC,
) -> EffectModel:
    """Fit one estimator (``ESTIMATORS``) on all usable rows (known arm, observed outcome), no diagnostics.

    ``outcome_params`` override ``DEFAULT_OUTCOME_PARAMS`` of the gradient-boosting outcome models,
    ``cate_params`` override ``DEFAULT_CATE_PARAMS`` of the effect models (DR/X), ``propensity_spec``
    (``PROPENSITY_SPECS``) and ``propensity_c`` (inverse L2 strength) fix the propensity model; ``None``
    = selected on these rows by ``select_propensity_model`` (the values used are
    ``metadata["propensity_spec"]`` / ``["propensity_c"]``). Raises ``ValueError`` when an arm has fewer
    than ``MIN_ROWS_PER_ARM`` training rows.
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
    propensity, how = _resolve_propensity(propensity_spec, propensity_c, Xm, t, seed)
    model = _fit_model_arrays(
        estimator, Xm, t, y, arms, reference_arm, feature_cols, seed=seed, outcome_params=outcome_params,
        propensity=propensity, cate_params=cate_params, treatment_col=treatment_col, outcome_col=outcome_col,
    )
    model.metadata = {
        **counts,
        "estimator": estimator,
        "n_train": int(len(y)),
        "n_per_arm": {a: int(n) for a, n in zip(arms, n_per_arm)},
        "seed": int(seed),
        "outcome_model": "HistGradientBoostingRegressor",
        "outcome_params": {**DEFAULT_OUTCOME_PARAMS, **(outcome_params or {})},
        "cate_model": ESTIMATOR_CATE_MODEL[estimator],
        "cate_params": {**DEFAULT_CATE_PARAMS, **(cate_params or {})} if estimator != "t_learner" else {},
        "propensity_model": PROPENSITY_SPEC_DESCRIPTION[propensity[0]],
        "propensity_spec": propensity[0],
        "propensity_c": float(propensity[1]),
        "propensity_selection": how,
        "sklearn_version": sklearn.__version__,
    }
    return model


def fit_effect_model(df: pd.DataFrame, feature_cols: Sequence[str], **kw: Any) -> EffectModel:
    """Fit a T-learner on all usable rows without cross-fitted diagnostics (``fit_model`` with the T-learner)."""
    return fit_model(df, feature_cols, estimator="t_learner", **kw)


def fit_ensemble(
    df: pd.DataFrame,
    feature_cols: Sequence[str],
    *,
    n_models: int = 5,
    seed: int = 0,
    estimator: str = "t_learner",
    treatment_col: str = TREATMENT_COL,
    outcome_col: str = OUTCOME_COL,
    arms: Sequence[str] = ARMS,
    **kw: Any,
) -> list[EffectModel]:
    """Fit ``n_models`` models of kind ``estimator`` on bootstrap resamples of the usable rows.

    Resampling is stratified by arm (each arm keeps its row count), so every member sees every arm. Member
    ``i`` uses seed ``seed + i`` for resampling and model fitting. ``kw`` is passed on to ``fit_model``
    (``reference_arm``, ``outcome_params``, ``propensity_c``, ``propensity_spec``, ``cate_params``); a
    propensity specification / penalty not given is selected once on all usable rows and shared by the
    members.
    """
    if n_models < 1:
        raise ValueError("n_models must be at least 1")
    usable = df[df[treatment_col].isin(list(arms)) & df[outcome_col].notna()]
    groups = [np.flatnonzero((usable[treatment_col] == a).to_numpy()) for a in arms]
    shared = kw.get("propensity_c") is None or kw.get("propensity_spec") is None
    shared = shared and min(map(len, groups)) >= MIN_ROWS_PER_ARM
    if shared:  # (a thin arm is left to fit_model, which names it)
        t = pd.Categorical(usable[treatment_col].astype(str), categories=list(arms)).codes.astype(np.int64)
        (spec, c), how = _resolve_propensity(kw.get("propensity_spec"), kw.get("propensity_c"),
                                             feature_matrix(usable, feature_cols), t, seed)
        kw = {**kw, "propensity_spec": spec, "propensity_c": c}
    models = []
    for i in range(n_models):
        rng = np.random.default_rng(seed + i)
        pick = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups if len(g)])
        sample = usable.iloc[np.sort(pick)]
        m = fit_model(
            sample, feature_cols, estimator=estimator, treatment_col=treatment_col, outcome_col=outcome_col,
            arms=arms, seed=seed + i, **kw,
        )
        m.metadata["bootstrap_member"] = i
        if shared:
            m.metadata["propensity_selection"] = f"{how} on all usable rows, shared by the members"
        models.append(m)
    return models


def overlap_flags(propensities: np.ndarray, observed_arm: np.ndarray | None = None) -> np.ndarray:
    """Boolean per row: outside overlap by ``OVERLAP_RULE``.

    ``propensities`` is (n, n_arms); ``observed_arm`` holds the column index of the arm each row received
    (a negative index, or ``observed_arm=None``, = no arm known: only the any-arm part of the rule applies).
    """
    low_any = propensities.min(axis=1) < OVERLAP_ANY_MIN
    if observed_arm is None:
        return low_any
    observed_arm = np.asarray(observed_arm)
    known = observed_arm >= 0
    e_obs = propensities[np.arange(len(observed_arm)), np.where(known, observed_arm, 0)]
    return (known & (e_obs < OVERLAP_OBSERVED_MIN)) | low_any


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


@dataclass
class CrossFit:
    """Cross-fitted nuisances on the training rows, shared by every estimator (patient-level: never logged).

    ``t``/``y``: arm index and outcome per row; ``mu``/``e``: out-of-fold outcome per arm (T-learner
    nuisance) and propensities, (n, n_arms); ``psi``: AIPW pseudo-outcomes; ``outside``: outside common
    support by ``OVERLAP_RULE``; ``folds``: (train, test) index pairs; ``Xm``: the feature matrix;
    ``propensity_spec`` / ``propensity_c``: the propensity model used in every fold.
    """

    arms: tuple[str, ...]
    reference_arm: str
    Xm: np.ndarray
    t: np.ndarray
    y: np.ndarray
    mu: np.ndarray
    e: np.ndarray
    psi: np.ndarray
    outside: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    counts: dict[str, int]
    propensity_spec: str = "linear"
    propensity_c: float = float("nan")

    @property
    def ref(self) -> int:
        return self.arms.index(self.reference_arm)

    def pseudo_effects(self) -> np.ndarray:
        """Doubly-robust pseudo-effect of each non-reference arm vs the reference, (n, n_arms - 1)."""
        return _contrasts(self.psi, self.ref)


@dataclass
class EstimatorResult:
    """One estimator fitted on all rows (``model``), its out-of-fold outcome predictions and diagnostics."""

    name: str
    model: EffectModel
    oof_outcomes: np.ndarray
    diagnostics: dict[str, float]


def cross_fit(
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
    propensity_c: float | None = DEFAULT_PROPENSITY_C,
    propensity_spec: str | None = DEFAULT_PROPENSITY_SPEC,
) -> CrossFit:
    """Cross-fit the nuisances (per-arm outcome models, propensity) over ``n_folds`` folds stratified by arm.

    A propensity specification / penalty left ``None`` is selected once on all usable rows
    (``select_propensity_model``, folds seeded with ``seed``) — tuning on the whole sample, then
    cross-fitting, as DoubleML does by default — and used in every fold (``cf.propensity_spec``,
    ``cf.propensity_c``).
    """
    arms = tuple(arms)
    rows, t, y, counts = _training_rows(df, treatment_col, outcome_col, arms)
    Xm = feature_matrix(rows, feature_cols)
    n, n_arms = len(y), len(arms)
    propensity, _ = _resolve_propensity(propensity_spec, propensity_c, Xm, t, seed)
    mu = np.empty((n, n_arms))
    e = np.empty((n, n_arms))
    folds = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(Xm, t))
    for f, (tr, te) in enumerate(folds):
        om, pm = _fit_arrays(Xm[tr], t[tr], y[tr], n_arms, seed + 100 * (f + 1), outcome_params, propensity)
        with omp_limit(len(te)):
            for k in range(n_arms):
                mu[te, k] = om[k].predict(Xm[te])
        e[te] = _propensity_proba(pm, Xm[te], n_arms)
    return CrossFit(arms=arms, reference_arm=reference_arm, Xm=Xm, t=t, y=y, mu=mu, e=e,
                    psi=aipw_scores(mu, e, t, y), outside=overlap_flags(e, t), folds=folds, counts=counts,
                    propensity_spec=propensity[0], propensity_c=propensity[1])


def nuisance_diagnostics(cf: CrossFit) -> dict[str, float]:
    """Aggregates that depend only on the shared nuisances (identical for every estimator of a data version)."""
    arms, t, y, mu, e, psi = cf.arms, cf.t, cf.y, cf.mu, cf.e, cf.psi
    ref, n = cf.ref, len(y)
    diag: dict[str, float] = {**{k: float(v) for k, v in cf.counts.items()}, "n_train": float(n)}
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
    diag["propensity_c"] = float(cf.propensity_c)
    diag["propensity_spline"] = float(cf.propensity_spec == "spline")
    diag["n_outside_overlap"] = float(cf.outside.sum())
    diag["frac_outside_overlap"] = float(cf.outside.mean())
    for k, a in enumerate(arms):
        if k == ref:
            continue
        diag[f"dr_ate_{a}"], diag[f"dr_ate_se_{a}"] = _mean_se(psi[:, k] - psi[:, ref])
        diag[f"naive_ate_{a}"] = float(y[t == k].mean() - y[t == ref].mean())
    diag["dr_policy_value_observed"] = float(y.mean())
    for k, a in enumerate(arms):
        diag[f"dr_policy_value_{a}"] = float(psi[:, k].mean())
    diag["n_folds"] = float(len(cf.folds))
    return diag


#: Prespecified subgroups of shared (federated) effect estimates: name -> ``(feature column, lower bound
#: inclusive, upper bound exclusive)``, ``None`` = every row. Age in years (cut at 65), baseline six-minute
#: walk in metres (cut at 500 m: about the lower third of baseline walks in the generated cohort; a 400 m
#: cut leaves < 10 % of patients below it, too few per arm for a site to release); a row whose column is
#: NaN belongs to no subgroup but ``all``.
EFFECT_SUBGROUPS: dict[str, tuple[str, float, float] | None] = {
    "all": None,
    "age_lt65": ("age_years", -np.inf, 65.0),
    "age_ge65": ("age_years", 65.0, np.inf),
    "6mwd_lt500": ("baseline_6mwd_m", -np.inf, 500.0),
    "6mwd_ge500": ("baseline_6mwd_m", 500.0, np.inf),
}
SUBGROUP_EFFECT_COLUMNS = ["therapy", "subgroup", "n", "n_reference", "n_subgroup", "estimate", "se"]


def subgroup_masks(
    rows: pd.DataFrame, subgroups: dict[str, tuple[str, float, float] | None] = EFFECT_SUBGROUPS
) -> dict[str, np.ndarray]:
    """Boolean membership per subgroup for ``rows`` (see ``EFFECT_SUBGROUPS``); raises ``KeyError`` naming
    a subgroup whose column is missing."""
    out = {}
    for name, rule in subgroups.items():
        if rule is None:
            out[name] = np.ones(len(rows), dtype=bool)
            continue
        col, lo, hi = rule
        if col not in rows.columns:
            raise KeyError(f"subgroup {name!r} needs column {col!r}, missing from the frame")
        v = pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        out[name] = (v >= lo) & (v < hi)  # NaN compares False: in no bounded subgroup
    return out


def subgroup_effects(
    cf: CrossFit, masks: dict[str, np.ndarray], *, small_cell_threshold: int = 0
) -> pd.DataFrame:
    """AIPW effect of each non-reference arm vs the reference per subgroup, from ``cf``'s cross-fitted
    pseudo-outcomes: estimate = mean over the subgroup's rows of ``psi[:, arm] - psi[:, ref]`` (metres),
    se = its sample SD / sqrt(rows) (for subgroup ``all`` this is ``dr_ate_<arm>`` / ``dr_ate_se_<arm>``).

    ``masks`` are aligned with ``cf``'s training rows. A (arm, subgroup) row is *released* only when both
    the arm's and the reference arm's row counts in the subgroup reach ``max(small_cell_threshold,
    MIN_ROWS_PER_ARM)``; withheld rows are left out. Columns ``SUBGROUP_EFFECT_COLUMNS``: ``n`` /
    ``n_reference`` = rows of the arm / reference arm in the subgroup, ``n_subgroup`` = all its rows.
    """
    n_rows = len(cf.y)
    floor = max(int(small_cell_threshold), MIN_ROWS_PER_ARM)
    pseudo = cf.pseudo_effects()
    contrast = [a for a in cf.arms if a != cf.reference_arm]
    rows = []
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n_rows,):
            raise ValueError(f"subgroup {name!r}: mask has shape {mask.shape}, expected ({n_rows},)")
        n_ref = int((mask & (cf.t == cf.ref)).sum())
        for j, arm in enumerate(contrast):
            n_arm = int((mask & (cf.t == cf.arms.index(arm))).sum())
            if n_arm < floor or n_ref < floor:
                continue
            est, se = _mean_se(pseudo[mask, j])
            rows.append({"therapy": arm, "subgroup": name, "n": n_arm, "n_reference": n_ref,
                         "n_subgroup": int(mask.sum()), "estimate": est, "se": se})
    return pd.DataFrame(rows, columns=SUBGROUP_EFFECT_COLUMNS)


def aipw_subgroup_effects(
    df: pd.DataFrame,
    feature_cols: Sequence[str],
    *,
    subgroups: dict[str, tuple[str, float, float] | None] = EFFECT_SUBGROUPS,
    small_cell_threshold: int = 0,
    treatment_col: str = TREATMENT_COL,
    outcome_col: str = OUTCOME_COL,
    arms: Sequence[str] = ARMS,
    reference_arm: str = REFERENCE_ARM,
    seed: int = 0,
    n_folds: int = 5,
    outcome_params: dict[str, Any] | None = None,
    propensity_c: float | None = DEFAULT_PROPENSITY_C,
    propensity_spec: str | None = DEFAULT_PROPENSITY_SPEC,
) -> tuple[pd.DataFrame, CrossFit]:
    """Cross-fit the nuisances on ``df``'s usable rows and return ``(subgroup_effects(...), cf)``.

    The releasable per-(arm, subgroup) AIPW estimates of one site (or of all rows centrally); subgroup
    membership comes from ``df``'s own columns (``subgroups``), which need not be features. Raises
    ``ValueError`` when an arm has fewer than ``MIN_ROWS_PER_ARM`` usable rows (nothing estimable).
    """
    arms = tuple(arms)
    rows, t, _, _ = _training_rows(df, treatment_col, outcome_col, arms)
    n_per_arm = np.bincount(t, minlength=len(arms))
    thin = [a for a, n in zip(arms, n_per_arm) if n < MIN_ROWS_PER_ARM]
    if thin:
        raise ValueError(f"arms with fewer than {MIN_ROWS_PER_ARM} rows having an observed outcome: {thin}")
    cf = cross_fit(df, feature_cols, treatment_col=treatment_col, outcome_col=outcome_col, arms=arms,
                   reference_arm=reference_arm, seed=seed, n_folds=n_folds, outcome_params=outcome_params,
                   propensity_c=propensity_c, propensity_spec=propensity_spec)
    return subgroup_effects(cf, subgroup_masks(rows, subgroups), small_cell_threshold=small_cell_threshold), cf


def qini_curve(pred_effect: np.ndarray, pseudo_effect: np.ndarray, n_points: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """Doubly-robust Qini (uplift) curve: treat the top fraction q by predicted effect.

    Returns ``(q, gain)`` on ``n_points`` fractions from 0 to 1, ``gain(q)`` = mean over all rows of
    ``1{ranked in top q} * pseudo_effect`` (metres per patient in the population); ``gain(1)`` is the ATE.
    Aggregates only.
    """
    order = np.argsort(-pred_effect, kind="stable")
    csum = np.concatenate([[0.0], np.cumsum(pseudo_effect[order])]) / len(order)
    q = np.linspace(0.0, 1.0, n_points)
    return q, csum[np.round(q * len(order)).astype(int)]


def qini_coefficient(pred_effect: np.ndarray, pseudo_effect: np.ndarray) -> float:
    """Area between the DR Qini curve and the random-targeting line (metres; higher is better ranking)."""
    q, gain = qini_curve(pred_effect, pseudo_effect, n_points=101)
    return float(np.trapezoid(gain - q * gain[-1], q))


def calibration_slope(pred_effect: np.ndarray, pseudo_effect: np.ndarray) -> float:
    """Slope of the pseudo-effect regressed on the centred predicted effect (1 = calibrated, 0 = no signal).

    The best-linear-predictor test of Chernozhukov et al. for heterogeneity: NaN when predictions are constant.
    """
    x = pred_effect - pred_effect.mean()
    vx = float(np.dot(x, x))
    return float(np.dot(x, pseudo_effect - pseudo_effect.mean()) / vx) if vx > 0 else float("nan")


def validation_metrics(outcomes: np.ndarray, cf: CrossFit) -> dict[str, float]:
    """Score per-arm outcome predictions for the training rows of ``cf`` without ground truth.

    ``outcomes`` (n, n_arms) are out-of-fold predictions for a challenger (or any model's predictions, e.g.
    the registered champion's). Returns:

    * ``val_tau_risk``: mean over contrasts of the mean squared difference between the predicted effect
      and the DR pseudo-effect, over rows inside common support (outside rows trimmed); it equals the
      PEHE² plus a term that does not depend on the model, so it ranks estimators like PEHE does;
      ``val_tau_risk_<arm>`` per contrast; ``n_trimmed``;
    * ``dr_policy_value_model`` (+ ``_se``): AIPW value of giving each row the arm with the highest
      predicted outcome (all rows, propensities clipped); ``dr_policy_gain`` (+ ``_se``): minus observed
      practice; ``frac_recommended_<arm>``;
    * ``val_qini_<arm>``, ``val_calibration_slope_<arm>``: DR Qini coefficient and calibration slope of
      the predicted effect (trimmed rows);
    * ``est_ate_<arm>``: mean predicted effect.
    """
    arms, ref, n = cf.arms, cf.ref, len(cf.y)
    if outcomes.shape != (n, len(arms)):
        raise ValueError(f"outcomes must have shape {(n, len(arms))}, got {outcomes.shape}")
    keep = ~cf.outside
    pred_eff, pseudo = _contrasts(outcomes, ref), cf.pseudo_effects()
    out: dict[str, float] = {"n_trimmed": float((~keep).sum())}
    risks = []
    for j, a in enumerate(a for a in arms if a != cf.reference_arm):
        r = float(np.mean((pred_eff[keep, j] - pseudo[keep, j]) ** 2))
        risks.append(r)
        out[f"val_tau_risk_{a}"] = r
        out[f"val_qini_{a}"] = qini_coefficient(pred_eff[keep, j], pseudo[keep, j])
        out[f"val_calibration_slope_{a}"] = calibration_slope(pred_eff[keep, j], pseudo[keep, j])
        out[f"est_ate_{a}"] = float(pred_eff[:, j].mean())
    out["val_tau_risk"] = float(np.mean(risks))
    best = outcomes.argmax(axis=1)
    psi_policy = cf.psi[np.arange(n), best]
    out["dr_policy_value_model"], out["dr_policy_value_model_se"] = _mean_se(psi_policy)
    out["dr_policy_gain"], out["dr_policy_gain_se"] = _mean_se(psi_policy - cf.y)
    for k, a in enumerate(arms):
        out[f"frac_recommended_{a}"] = float((best == k).mean())
    return out


def fit_estimators(
    df: pd.DataFrame,
    feature_cols: Sequence[str],
    *,
    estimators: Sequence[str] = ESTIMATORS,
    treatment_col: str = TREATMENT_COL,
    outcome_col: str = OUTCOME_COL,
    arms: Sequence[str] = ARMS,
    reference_arm: str = REFERENCE_ARM,
    seed: int = 0,
    n_folds: int = 5,
    outcome_params: dict[str, Any] | None = None,
    propensity_c: float | None = DEFAULT_PROPENSITY_C,
    cate_params: dict[str, Any] | None = None,
    propensity_spec: str | None = DEFAULT_PROPENSITY_SPEC,
) -> tuple[CrossFit, dict[str, EstimatorResult]]:
    """Fit every estimator on the same rows and score each on the same cross-fitted yardstick.

    Rows without a therapy or without an observed outcome are excluded (counted). The nuisances are
    cross-fitted once (``cross_fit``); each estimator is then refitted on the training folds of the same
    folds and predicts the held-out fold (its out-of-fold predictions), and fitted once on all rows (the
    model that is logged and used). Diagnostics per estimator = ``nuisance_diagnostics`` (shared) +
    ``validation_metrics`` of its out-of-fold predictions; all flat numbers, MLflow-ready. The propensity
    model (``propensity_spec`` / ``propensity_c``, or as ``cross_fit`` selected them) is the same in every fit.
    """
    arms = tuple(arms)
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimators {unknown}; choose from {list(ESTIMATORS)}")
    kw = dict(treatment_col=treatment_col, outcome_col=outcome_col, arms=arms, reference_arm=reference_arm,
              outcome_params=outcome_params, propensity_c=propensity_c, propensity_spec=propensity_spec)
    cf = cross_fit(df, feature_cols, seed=seed, n_folds=n_folds, **kw)
    how = ("fixed" if propensity_c is not None and propensity_spec is not None
           else f"{PROPENSITY_CV_FOLDS}-fold cross-validated log loss on all rows (cross_fit)")
    kw.update(propensity_spec=cf.propensity_spec, propensity_c=cf.propensity_c)
    propensity = (cf.propensity_spec, cf.propensity_c)
    shared = nuisance_diagnostics(cf)
    results: dict[str, EstimatorResult] = {}
    for name in estimators:
        model = fit_model(df, feature_cols, estimator=name, seed=seed, cate_params=cate_params, **kw)
        if name == "t_learner":
            oof = cf.mu  # the cross-fitted nuisance *is* the out-of-fold T-learner
        else:
            oof = np.empty_like(cf.mu)
            for f, (tr, te) in enumerate(cf.folds):
                m = _fit_model_arrays(
                    name, cf.Xm[tr], cf.t[tr], cf.y[tr], arms, reference_arm, feature_cols,
                    seed=seed + 100 * (f + 1), outcome_params=outcome_params, propensity=propensity,
                    cate_params=cate_params,
                )
                oof[te] = m._predict_matrix(cf.Xm[te])
        diag = {**shared, **validation_metrics(oof, cf)}
        model.metadata.update(overlap_rule=OVERLAP_RULE, n_folds=int(n_folds), validation_metric=VALIDATION_METRIC,
                              propensity_selection=how)
        results[name] = EstimatorResult(name=name, model=model, oof_outcomes=oof, diagnostics=diag)
    return cf, results


def best_estimator(results: dict[str, EstimatorResult]) -> str:
    """Name of the estimator with the lowest finite ``VALIDATION_METRIC`` (ties: first in ``results`` order)."""
    scored = [(r.diagnostics.get(VALIDATION_METRIC, float("nan")), i, name) for i, (name, r) in enumerate(results.items())]
    scored = [s for s in scored if np.isfinite(s[0])]
    if not scored:
        raise ValueError(f"no estimator has a finite {VALIDATION_METRIC}")
    return min(scored)[2]


def fit_t_learner(df: pd.DataFrame, feature_cols: Sequence[str], **kw: Any) -> tuple[EffectModel, dict[str, float]]:
    """Fit the T-learner on all usable rows and compute cross-fitted diagnostics (see ``fit_estimators``).

    Returns ``(model, diagnostics)``; ``diagnostics`` is a flat dict of numbers (MLflow-ready), outcomes
    in metres: counts (``n_rows``, ``n_train``, ``n_excluded_*``, ``n_train_<arm>``), out-of-fold fit
    (``oof_r2_<arm>``, ``oof_rmse_<arm>``), propensity range, model and overlap (``propensity_min`` /
    ``_max``, ``propensity_c``, ``propensity_spline`` = 1 when the spline logit was selected,
    ``n_outside_overlap``, ``frac_outside_overlap``), AIPW ATEs (``dr_ate_<arm>`` + ``_se``, ``naive_ate_<arm>``), policy values
    (``dr_policy_value_model`` + ``_se``, ``dr_policy_value_observed``, ``dr_policy_value_<arm>``,
    ``dr_policy_gain`` + ``_se``), and the validation metrics of ``validation_metrics``.
    """
    _, results = fit_estimators(df, feature_cols, estimators=("t_learner",), **kw)
    r = results["t_learner"]
    return r.model, r.diagnostics


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
    model's / the truly best arm), ``calibration_slope_<arm>`` (true effect regressed on the predicted
    effect: 1 = calibrated), ``regret`` (oracle minus model), ``policy_accuracy`` (share of rows
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
        out[f"calibration_slope_{a}"] = calibration_slope(pe[:, j], te[:, j])
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


def generator_twins(n: int, seed: int = 0, *, n_sites: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """A model-facing twin table drawn straight from the synthetic generator, with its ground truth.

    For benchmarks and tests that need realistic confounding without running the pipeline: patients come
    from ``twin_pipeline.synth.cohort.cohort_simulate`` (the same treatment and outcome model as the demo
    cohort), mapped onto ``MODEL_FEATURES``-style columns (features the generator does not simulate per
    patient — HbA1c, FEV1/FVC, ECG — are NaN, as in a twin without those sources). Returns ``(df, truth)``:
    ``df`` has ``person_id`` (synthetic ``g<seed>_<i>``), ``site_id``, the features, ``therapy`` and
    ``outcome_6mwd_90d_m`` (NaN when the follow-up falls after the data cut); ``truth`` is (n, n_arms) of
    realised potential outcomes in ``ARMS`` order.
    """
    from twin_pipeline.lib.twin import MODEL_FEATURES
    from twin_pipeline.synth.cohort import cohort_simulate, delivery_dates
    from twin_pipeline.synth.sites import site_profiles

    rng = np.random.default_rng(seed)
    profiles = site_profiles(n_sites)
    sizes = np.full(n_sites, n // n_sites)
    sizes[: n - sizes.sum()] += 1
    dates = delivery_dates(2)
    frames = [cohort_simulate(p, int(k), dates, rng) for p, k in zip(profiles, sizes)]
    c = pd.concat(frames, ignore_index=True)
    days_since = np.array([(i - v).days for i, v in zip(c["index_date"], c["covid_date"])], dtype=float)
    df = pd.DataFrame({
        "person_id": [f"g{seed}_{i:07d}" for i in range(len(c))],
        "site_id": c["site_id"].to_numpy(),
        "age_years": c["age_at_index"].to_numpy(float),
        "sex_male": (~c["female"].astype(bool)).astype(float).to_numpy(),
        "baseline_6mwd_m": c["baseline_6mwd_m"].to_numpy(float),
        "crp_mg_l": c["crp_baseline_mg_l"].to_numpy(float),
        "hba1c_pct": np.nan,
        "fev1_fvc_pct": np.nan,
        "bmi": c["bmi"].to_numpy(float),
        "fatigue_score": c["fatigue_baseline"].to_numpy(float),
        "dyspnea_mmrc": c["mmrc_baseline"].to_numpy(float),
        "post_exertional_malaise": (c["severity"].to_numpy(float) > 0.5).astype(float),
        "days_since_covid": days_since,
        "dx_copd": c["coded_copd"].astype(float).to_numpy(),
        "dx_type2_diabetes": c["coded_t2d"].astype(float).to_numpy(),
        "dx_rheumatoid_arthritis": c["coded_ra"].astype(float).to_numpy(),
        "hr_mean_bpm": np.nan,
        "hrv_rmssd_ms": np.nan,
        "resting_hr_bpm": c["resting_hr_bpm"].to_numpy(float),
        "therapy": c["therapy_arm"].to_numpy(object),
        "outcome_6mwd_90d_m": c["observed_outcome_m"].to_numpy(float),
    })
    assert list(df.columns[2:-2]) == list(MODEL_FEATURES), "generator_twins is out of step with MODEL_FEATURES"
    return df, c[[f"y_{a}" for a in ARMS]].to_numpy(float)
