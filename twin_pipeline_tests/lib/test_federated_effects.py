"""Federated effect estimation: per-site AIPW subgroup estimates (what a site may share) pooled by the
coordinator, on a generated multi-site cohort with planted between-site heterogeneity of the rehab effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib import effects
from twin_pipeline.lib.meta_analysis import pool_table
from twin_pipeline.lib.twin import MODEL_FEATURES

CONTRASTS = ("pulmonary_rehab", "colchicine", "antiviral")
N_SITES = 6
N_PATIENTS = 6000  # 1,000 per site
THRESHOLD = 10  # the strictest reference site's small-cell threshold


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    """Generated twins (6 sites × 1,000) with an observed outcome, plus each patient's true effects."""
    df, truth = effects.generator_twins(N_PATIENTS, seed=0, n_sites=N_SITES)
    for k, arm in enumerate(effects.ARMS):
        df[f"true_tau_{arm}"] = truth[:, k] - truth[:, 0]
    return df[df["outcome_6mwd_90d_m"].notna()].reset_index(drop=True)


@pytest.fixture(scope="module")
def site_estimates(cohort) -> pd.DataFrame:
    """What every site shares: its released AIPW estimate and SE per therapy × subgroup (no rows)."""
    frames = []
    for site, g in cohort.groupby("site_id"):
        est, _ = effects.aipw_subgroup_effects(g, MODEL_FEATURES, small_cell_threshold=THRESHOLD, seed=7, n_folds=3)
        frames.append(est.assign(siteid=site))
    return pd.concat(frames, ignore_index=True)


def test_subgroup_all_equals_the_cross_fitted_aipw_ate(cohort):
    g = cohort[cohort["site_id"] == "hospital_a"]
    est, cf = effects.aipw_subgroup_effects(g, MODEL_FEATURES, seed=3, n_folds=3)
    diag = effects.nuisance_diagnostics(cf)
    allrows = est[est["subgroup"] == "all"].set_index("therapy")
    for arm in CONTRASTS:
        assert allrows.loc[arm, "estimate"] == pytest.approx(diag[f"dr_ate_{arm}"])
        assert allrows.loc[arm, "se"] == pytest.approx(diag[f"dr_ate_se_{arm}"])
        assert allrows.loc[arm, "n"] == diag[f"n_train_{arm}"]
    # complementary subgroups partition the rows that have the column
    sub = est.set_index(["therapy", "subgroup"])
    for arm in CONTRASTS:
        if (arm, "age_lt65") in sub.index and (arm, "age_ge65") in sub.index:
            assert sub.loc[(arm, "age_lt65"), "n"] + sub.loc[(arm, "age_ge65"), "n"] == sub.loc[(arm, "all"), "n"]


def test_small_subgroup_cells_are_not_released(cohort):
    g = cohort[cohort["site_id"] == "hospital_b"]
    cf = effects.cross_fit(g, MODEL_FEATURES, seed=1, n_folds=3)
    rows = g[g["therapy"].notna() & g["outcome_6mwd_90d_m"].notna()]
    masks = effects.subgroup_masks(rows)
    per_arm = pd.crosstab(rows["therapy"], masks["6mwd_lt500"])
    # a threshold just above the smallest count in the subgroup withholds exactly the rows it must
    cut = int(per_arm[True].min()) + 1
    est = effects.subgroup_effects(cf, masks, small_cell_threshold=cut)
    floor = max(cut, effects.MIN_ROWS_PER_ARM)
    assert (est["n"] >= floor).all() and (est["n_reference"] >= floor).all()
    lt = est[est["subgroup"] == "6mwd_lt500"]
    expected = {a for a in CONTRASTS if per_arm.loc[a, True] >= floor and per_arm.loc["standard_care", True] >= floor}
    assert set(lt["therapy"]) == expected
    # MIN_ROWS_PER_ARM is a floor even when the site's threshold is lower
    tiny = {"few": np.arange(len(cf.y)) < effects.MIN_ROWS_PER_ARM}
    assert effects.subgroup_effects(cf, tiny, small_cell_threshold=3).empty
    # NaN in the subgroup column: in no bounded subgroup, still in "all"
    nan_rows = rows.assign(age_years=np.nan)
    m = effects.subgroup_masks(nan_rows)
    assert m["all"].all() and not m["age_lt65"].any() and not m["age_ge65"].any()
    with pytest.raises(ValueError, match="mask has shape"):
        effects.subgroup_effects(cf, {"bad": np.ones(3, dtype=bool)})
    with pytest.raises(KeyError, match="age_years"):
        effects.subgroup_masks(rows.drop(columns=["age_years"]))


def test_a_site_with_a_thin_arm_is_refused(cohort):
    g = cohort[cohort["site_id"] == "hospital_c"]
    thin = pd.concat([g[g["therapy"] != "colchicine"], g[g["therapy"] == "colchicine"].head(5)])
    with pytest.raises(ValueError, match="colchicine"):
        effects.aipw_subgroup_effects(thin, MODEL_FEATURES, n_folds=3)


def test_shared_estimates_are_aggregates_only(site_estimates, cohort):
    assert set(site_estimates.columns) == {"siteid", *effects.SUBGROUP_EFFECT_COLUMNS}
    assert set(site_estimates["subgroup"]) <= set(effects.EFFECT_SUBGROUPS)
    assert (site_estimates["se"] > 0).all() and (site_estimates["n"] >= THRESHOLD).all()
    assert not set(cohort["person_id"]) & set(site_estimates.astype(str).to_numpy().ravel())
    # every site releases every therapy for "all" (1,000 patients per site)
    assert (site_estimates[site_estimates["subgroup"] == "all"].groupby("siteid").size() == 3).all()


def test_planted_rehab_heterogeneity_is_detected_and_re_estimate_covers_the_truth(site_estimates, cohort):
    """Tolerance: the true average effect over the analysed patients lies inside the random-effects 95 %
    CI (RE ± 1.96 SE) and within 15 m of the RE estimate, for every therapy (subgroup "all")."""
    pooled = pool_table(site_estimates, ["therapy", "subgroup"]).set_index(["therapy", "subgroup"])
    assert len(pooled) == site_estimates[["therapy", "subgroup"]].drop_duplicates().shape[0]
    rehab, colch = pooled.loc[("pulmonary_rehab", "all")], pooled.loc[("colchicine", "all")]
    assert rehab["n_sites"] == N_SITES
    assert rehab["q_pvalue"] < 0.05 and rehab["i2"] > 0.5 and rehab["tau2"] > 50  # planted: SD 16 m over 6 sites
    assert colch["q_pvalue"] > 0.05 and rehab["i2"] > colch["i2"] + 0.4  # not planted: case mix only
    for arm in CONTRASTS:
        r = pooled.loc[(arm, "all")]
        truth = float(cohort[f"true_tau_{arm}"].mean())
        assert abs(r["random"] - truth) < min(1.96 * r["random_se"], 15.0), (arm, r["random"], truth)
        assert r["random_se"] >= r["fixed_se"] - 1e-9
