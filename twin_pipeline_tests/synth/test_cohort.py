"""Statistical properties of the latent cohort (no files): confounding, effects, miscoding rates."""

from __future__ import annotations

import numpy as np
import pytest

from twin_pipeline.synth.cohort import ARMS, cohort_simulate, delivery_dates
from twin_pipeline.synth.sites import site_id_for, site_profiles, site_sizes

N = 5000


@pytest.fixture(scope="module")
def big_sites():
    """Latent cohorts of N patients for each reference site (fast: no files)."""
    dates = delivery_dates(2)
    return {p.site_id: cohort_simulate(p, N, dates, np.random.default_rng([3, i]))
            for i, p in enumerate(site_profiles(3))}


def test_site_ids_sizes_and_profiles_follow_a_deterministic_pattern():
    assert [site_id_for(i) for i in (0, 1, 2, 25, 26, 27)] == [
        "hospital_a", "hospital_b", "hospital_c", "hospital_z", "hospital_aa", "hospital_ab"]
    assert site_sizes(site_profiles(3), 200) == [280, 200, 120]
    six = site_profiles(6)
    assert sum(site_sizes(six, 100)) == 600
    assert [p.date_format for p in six[3:]] == [p.date_format for p in six[:3]]
    assert six[5].ecg_sampling_rate_hz == 360 and six[2].ecg_sampling_rate_hz == 500


def test_delivery_dates_are_monthly_from_october_2026():
    assert [d.isoformat() for d in delivery_dates(4)] == [
        "2026-10-01", "2026-11-01", "2026-12-01", "2027-01-01"]


def test_hospital_b_codes_about_40_percent_of_true_oa_as_ra(big_sites):
    rates = {}
    for sid, t in big_sites.items():
        oa = t[t.true_oa]
        rates[sid] = (oa.coded_ra & ~oa.coded_oa).mean()
    assert 0.35 <= rates["hospital_b"] <= 0.45, rates
    assert rates["hospital_a"] < 0.09 and rates["hospital_c"] < 0.09, rates


def test_other_planted_miscoding_rates(big_sites):
    a, c = big_sites["hospital_a"], big_sites["hospital_c"]
    t2d_as_t1d = a[a.true_t2d].coded_t1d.mean()
    assert 0.11 <= t2d_as_t1d <= 0.19
    resp = c[c.true_asthma | c.true_copd]
    confusion = ((resp.true_asthma & resp.coded_copd) | (resp.true_copd & resp.coded_asthma)).mean()
    assert 0.15 <= confusion <= 0.25
    assert big_sites["hospital_b"][big_sites["hospital_b"].true_t2d].coded_t1d.mean() < 0.05


def test_true_phenotypes_have_their_risk_profile(big_sites):
    t = big_sites["hospital_a"]
    assert t[t.true_copd].age_at_index.mean() > t[t.true_asthma].age_at_index.mean() + 8
    assert t[t.true_copd].ever_smoker.mean() > 0.6 > t[t.true_asthma].ever_smoker.mean()
    assert t[t.true_t2d].bmi.mean() > t[t.true_t1d].bmi.mean() + 4
    assert not (t.true_ra & t.true_oa).any() and not (t.true_t1d & t.true_t2d).any()
    assert (t.age_at_index >= 90).any() and t.age_at_index.between(18, 96).all()


def test_treatment_is_confounded_by_baseline_severity(big_sites):
    t = big_sites["hospital_a"]
    g = t.groupby("therapy_arm")
    walk, age, crp = g.baseline_6mwd_m.mean(), g.age_at_index.mean(), g.crp_baseline_mg_l.median()
    assert walk["pulmonary_rehab"] < walk["standard_care"] - 30
    assert g.fatigue_baseline.mean()["pulmonary_rehab"] > g.fatigue_baseline.mean()["standard_care"]
    assert crp["colchicine"] > 1.5 * crp["standard_care"]
    assert age["antiviral"] > age["standard_care"]
    assert g.recent_infection.mean()["antiviral"] > g.recent_infection.mean()["standard_care"] + 0.2
    # overlap: every arm keeps a non-trivial probability for every patient
    props = t[[f"propensity_{a}" for a in ARMS]].to_numpy()
    assert props.min() >= 0.03 and np.allclose(props.sum(axis=1), 1.0, atol=1e-3)
    assert set(t.therapy_arm) == set(ARMS)


def test_effects_are_heterogeneous_and_consistent(big_sites):
    t = big_sites["hospital_b"]
    for a in ARMS:
        assert np.allclose(t[f"tau_{a}"], t[f"y_{a}"] - t["y_standard_care"])
    low_walk_young = t[(t.baseline_6mwd_m < 400) & (t.age_at_index < 55)]
    high_walk_old = t[(t.baseline_6mwd_m > 550) & (t.age_at_index > 65)]
    assert low_walk_young.tau_pulmonary_rehab.mean() > high_walk_old.tau_pulmonary_rehab.mean() + 20
    assert t[t.crp_baseline_mg_l > 20].tau_colchicine.mean() > 15
    assert t[t.crp_baseline_mg_l < 2].tau_colchicine.mean() < 0
    old_recent = t[t.recent_infection & (t.age_at_index > 70)]
    assert old_recent.tau_antiviral.mean() > 15 > t[~t.recent_infection].tau_antiviral.max()
    obs = t[t.outcome_observed]
    picked = np.choose(obs.therapy_arm.map({a: i for i, a in enumerate(ARMS)}).to_numpy(),
                       [obs[f"y_{a}"].to_numpy() for a in ARMS])
    assert np.array_equal(obs.observed_outcome_m.to_numpy(), picked)


def test_planted_site_effect_shift_moves_rehab_only_and_stays_out_of_the_public_yaml(big_sites):
    """Rehab is shifted per site (A +0, B −20, C +15 m); colchicine/antiviral are not; the shift is
    ground truth (truth profile), never part of the public site conventions."""
    from twin_pipeline.synth.cohort import treatment_effects
    from twin_pipeline.synth.sites import REHAB_EFFECT_SHIFT_M, effect_shift_for

    profiles = site_profiles(12)
    assert [p.effect_shift["pulmonary_rehab"] for p in profiles[:3]] == [0.0, -20.0, 15.0]
    assert profiles[10].effect_shift == effect_shift_for(0) == {"pulmonary_rehab": REHAB_EFFECT_SHIFT_M[0]}
    assert np.std(REHAB_EFFECT_SHIFT_M) > 10
    for p in profiles[:3]:
        assert "effect_shift" not in repr(p.site_yaml()) and "effect_shift_m" in p.truth_profile()
        assert p.truth_profile()["effect_shift_m"] == p.effect_shift
    # the shift is added to every patient's true effect, exactly (before the outcome clip)
    rng = np.random.default_rng(0)
    age, walk = rng.uniform(20, 90, 50), rng.uniform(100, 700, 50)
    crp, recent = rng.uniform(0.5, 80, 50), rng.random(50) < 0.5
    base = treatment_effects(age, walk, crp, recent)
    shifted = treatment_effects(age, walk, crp, recent, {"pulmonary_rehab": -20.0})
    assert np.allclose(shifted["pulmonary_rehab"] - base["pulmonary_rehab"], -20.0)
    for a in ("standard_care", "colchicine", "antiviral"):
        assert np.array_equal(shifted[a], base[a])
    with pytest.raises(ValueError, match="effect_shift"):
        treatment_effects(age, walk, crp, recent, {"standard_care": 5.0})
    # in the simulated cohorts: same patients' effect formula, so the site means differ by the shift
    # plus case mix; the planted gap B vs C (−35 m) dominates the case-mix difference
    a, b, c = (big_sites[s] for s in ("hospital_a", "hospital_b", "hospital_c"))
    gap_rehab = b.tau_pulmonary_rehab.mean() - c.tau_pulmonary_rehab.mean()
    assert -45 < gap_rehab < -25, gap_rehab
    for arm in ("colchicine", "antiviral"):
        assert abs(b[f"tau_{arm}"].mean() - c[f"tau_{arm}"].mean()) < 10


def test_site_truth_effect_equals_formula_plus_shift(big_sites):
    from twin_pipeline.synth.cohort import treatment_effects

    t = big_sites["hospital_b"]
    tau = treatment_effects(t.age_at_index.to_numpy(), t.baseline_6mwd_m.to_numpy(),
                            t.crp_baseline_mg_l.to_numpy(), t.recent_infection.to_numpy(),
                            {"pulmonary_rehab": -20.0})
    # realised effects equal the formula except where an outcome hit the 20..850 m clip
    unclipped = (t[[f"y_{a}" for a in ARMS]].gt(20) & t[[f"y_{a}" for a in ARMS]].lt(850)).all(axis=1)
    diff = np.abs(t.loc[unclipped, "tau_pulmonary_rehab"].to_numpy() - tau["pulmonary_rehab"][unclipped.to_numpy()])
    assert unclipped.mean() > 0.95 and diff.max() <= 1.0  # outcomes are rounded to whole metres
