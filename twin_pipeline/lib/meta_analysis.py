"""Pooling site-level effect estimates without patient data: fixed and random effects.

Each site shares only an estimate and its standard error per (arm, subgroup). The coordinator pools
them with inverse-variance fixed effects and with DerSimonian–Laird random effects, and reports the
between-site heterogeneity (Cochran's Q, its p-value, I², τ²). Estimates and standard errors are in
the unit of the effect (metres of 90-day six-minute walk distance in this project), τ² in that unit
squared; Q p-value and I² are unitless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Pooled:
    """Pooled effect over ``n_sites`` sites: fixed (inverse-variance) and DerSimonian–Laird random effects
    with their standard errors, between-site variance ``tau2``, Cochran's ``q`` with its chi² p-value
    (k − 1 degrees of freedom) and ``i2`` = max(0, (Q − (k − 1)) / Q)."""

    n_sites: int
    fixed: float
    fixed_se: float
    random: float
    random_se: float
    tau2: float
    q: float
    q_pvalue: float
    i2: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def ci(self, model: str = "random", level: float = 0.95) -> tuple[float, float]:
        """Wald confidence interval ``estimate ± z·SE`` of the ``"fixed"`` or ``"random"`` pooled effect."""
        return wald_ci(getattr(self, model), getattr(self, f"{model}_se"), level)


POOLED_COLUMNS = ["n_sites", "fixed", "fixed_se", "random", "random_se", "tau2", "q", "q_pvalue", "i2"]


def wald_ci(estimate: float, se: float, level: float = 0.95) -> tuple[float, float]:
    """Normal-approximation confidence interval ``estimate ± z_(1+level)/2 · se`` (same unit as ``estimate``)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    z = float(stats.norm.ppf(0.5 + level / 2))
    return float(estimate - z * se), float(estimate + z * se)


def pool_estimates(estimates: np.ndarray, ses: np.ndarray) -> Pooled:
    """Inverse-variance fixed effect and DerSimonian–Laird random effects over sites.

    `estimates`, `ses`: one value per site (sites with a missing or non-positive SE are left out).
    """
    y = np.asarray(estimates, dtype=float)
    se = np.asarray(ses, dtype=float)
    ok = np.isfinite(y) & np.isfinite(se) & (se > 0)
    y, se = y[ok], se[ok]
    k = len(y)
    if k == 0:
        return Pooled(0, *(np.nan,) * 8)
    w = 1.0 / se**2
    fixed = float(np.sum(w * y) / np.sum(w))
    fixed_se = float(np.sqrt(1.0 / np.sum(w)))
    if k == 1:
        return Pooled(1, fixed, fixed_se, fixed, fixed_se, 0.0, 0.0, 1.0, 0.0)
    q = float(np.sum(w * (y - fixed) ** 2))
    c = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    tau2 = max(0.0, (q - (k - 1)) / c) if c > 0 else 0.0
    wr = 1.0 / (se**2 + tau2)
    random = float(np.sum(wr * y) / np.sum(wr))
    random_se = float(np.sqrt(1.0 / np.sum(wr)))
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    return Pooled(k, fixed, fixed_se, random, random_se, tau2, q, float(stats.chi2.sf(q, k - 1)), i2)


def pool_table(site_estimates: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Pool a table of site rows (`siteid`, `estimate`, `se`, plus the `by` keys) per group.

    One row per group: the `by` keys and ``POOLED_COLUMNS``. A site may contribute at most one row per
    group (a duplicate is an error naming the site and group, never silently double-weighted)."""
    missing = [c for c in ["siteid", "estimate", "se", *by] if c not in site_estimates.columns]
    if missing:
        raise KeyError(f"site estimate table lacks columns {missing}")
    dup = site_estimates.duplicated(subset=["siteid", *by], keep=False)
    if dup.any():
        first = site_estimates.loc[dup, ["siteid", *by]].iloc[0].to_dict()
        raise ValueError(f"site estimate table has more than one row for {first}")
    rows = []
    for key, g in site_estimates.groupby(by):
        res = pool_estimates(g["estimate"].to_numpy(), g["se"].to_numpy())
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), **res.as_dict()})
    return pd.DataFrame(rows, columns=[*by, *POOLED_COLUMNS])
