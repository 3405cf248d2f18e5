"""Latent patient state of the synthetic long-COVID cohort: phenotypes, treatment, potential outcomes.

One row per patient. Everything here is *ground truth*: true phenotypes, the (mis)coded
diagnoses, the confounded therapy assignment with its propensities, the potential six-minute walk
distances (metres) under every arm and the timeline (dates) that the EHR builder turns into rows.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from twin_pipeline.synth.sites import SiteProfile

ARMS = ("standard_care", "pulmonary_rehab", "colchicine", "antiviral")
RECENT_INFECTION_DAYS = 150  # infection-to-index interval counted as "recent" (days)
REFERRAL_SHARE = 0.08        # new patients per incremental delivery, share of site size


def delivery_dates(deliveries: int) -> list[dt.date]:
    """Delivery dates: 2026-10-01 and then the first of each following month."""
    if deliveries < 1:
        raise ValueError(f"deliveries must be >= 1, got {deliveries}")
    out = []
    for k in range(deliveries):
        month0 = 9 + k  # 0-based month index from January 2026
        out.append(dt.date(2026 + month0 // 12, month0 % 12 + 1, 1))
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _days(base: dt.date, offsets: np.ndarray) -> list[dt.date]:
    return [base + dt.timedelta(days=int(d)) for d in offsets]


def treatment_propensity(age: np.ndarray, fatigue: np.ndarray, walk_m: np.ndarray,
                         crp_mg_l: np.ndarray, recent: np.ndarray,
                         bias: dict[str, float] | None = None) -> np.ndarray:
    """Probability of each arm (columns in ``ARMS`` order) given baseline severity.

    Sicker patients (older, more fatigue, shorter baseline walk in metres, higher CRP in mg/L) are
    more likely to get rehabilitation or colchicine; recent infection and age favour the antiviral.
    A 15 % uniform mixture keeps every arm possible for every patient (overlap).
    """
    bias = bias or {}
    logits = np.column_stack([
        np.zeros_like(age, dtype=float),
        -0.3 + 0.025 * (age - 55) + 0.30 * (fatigue - 5) - 0.007 * (walk_m - 420)
        + bias.get("pulmonary_rehab", 0.0),
        -1.0 + 0.9 * np.log(crp_mg_l / 5.0) + 0.15 * (fatigue - 5) + 0.01 * (age - 55)
        + bias.get("colchicine", 0.0),
        -1.8 + 2.2 * recent + 0.045 * (age - 55) + bias.get("antiviral", 0.0),
    ])
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return 0.85 * p + 0.15 / len(ARMS)


def treatment_effects(age: np.ndarray, walk_m: np.ndarray, crp_mg_l: np.ndarray,
                      recent: np.ndarray, effect_shift: dict[str, float] | None = None,
                      ) -> dict[str, np.ndarray]:
    """True individual effects on day-90 six-minute walk distance (metres) vs standard care.

    Rehab helps most with a short baseline walk and younger age; colchicine helps with high CRP and
    harms slightly with low CRP; the antiviral helps older patients with a recent infection.
    ``effect_shift`` (arm -> metres, a site's ``SiteProfile.effect_shift``) is added to every
    patient's effect of that arm: the planted between-site heterogeneity.
    """
    shift = dict(effect_shift or {})
    unknown = sorted(set(shift) - set(ARMS[1:]))
    if unknown:
        raise ValueError(f"effect_shift arms must be among {list(ARMS[1:])}; got {unknown}")
    rehab = 8.0 + 0.18 * np.maximum(0.0, 500.0 - walk_m) + 0.7 * (62.0 - age)
    colchicine = -10.0 + 45.0 * _sigmoid(2.0 * (np.log(crp_mg_l) - np.log(8.0)))
    antiviral = np.where(recent, 4.0 + 0.9 * np.maximum(0.0, age - 50.0), -2.0)
    out = {"standard_care": np.zeros_like(walk_m, dtype=float), "pulmonary_rehab": rehab,
           "colchicine": colchicine, "antiviral": antiviral.astype(float)}
    for arm, metres in shift.items():
        out[arm] = out[arm] + float(metres)
    return out


def cohort_simulate(profile: SiteProfile, n_patients: int, dates: list[dt.date],
                    rng: np.random.Generator, *, ventilator_available: bool = True) -> pd.DataFrame:
    """Simulate ``n_patients`` patients of one site: one row per patient, ground-truth columns.

    ``dates`` are the delivery cut-offs; rows dated on or after the last one are never delivered.
    Patients either belong to the initial extract or are new referrals of a later delivery.
    """
    n = int(n_patients)
    d_first, d_last = dates[0], dates[-1]
    window_start = d_last - dt.timedelta(days=730)

    # --- entry delivery: most patients in the initial extract, some referrals later -----------
    entry = np.zeros(n, dtype=int)
    if len(dates) > 1:
        n_ref = int(round(REFERRAL_SHARE * n))
        slots = rng.permutation(n)
        pos = 0
        for k in range(1, len(dates)):
            entry[slots[pos:pos + n_ref]] = k
            pos += n_ref

    # --- demographics and latent health ------------------------------------------------------
    age = np.clip(rng.normal(profile.age_mean, profile.age_sd, n), 18, 89)
    very_old = rng.random(n) < 0.03
    age[very_old] = rng.uniform(90, 96, very_old.sum())
    if n >= 20 and not (age >= 90).any():
        age[np.argmax(age)] = rng.uniform(90, 96)
    age = np.floor(np.clip(age, 18, 95.9) * 10) / 10
    female = rng.random(n) < profile.female_share
    smoker = rng.random(n) < (0.22 + 0.25 * (age > 50))
    pack_years = np.where(smoker, np.round(rng.gamma(3.0, 9.0, n)), 0)
    height_cm = np.where(female, rng.normal(163, 7, n), rng.normal(177, 7, n))
    bmi = np.clip(rng.normal(27.5, 4.8, n), 17, 50)

    # --- true phenotypes ------------------------------------------------------------------
    u = rng.random((n, 12))
    copd = u[:, 0] < _sigmoid(-4.2 + 0.06 * (age - 55) + 2.2 * smoker)
    asthma = ~copd & (u[:, 1] < np.where(age < 50, 0.13, 0.07))
    ra = u[:, 2] < np.where(female, 0.08, 0.045)
    oa = ~ra & (u[:, 3] < _sigmoid(-2.6 + 0.075 * (age - 50) + 0.06 * (bmi - 27)))
    t1d = u[:, 4] < np.where(age < 45, 0.05, 0.025)
    t2d = ~t1d & (u[:, 5] < _sigmoid(-3.0 + 0.04 * (age - 50) + 0.18 * (bmi - 27)))
    bmi = np.where(t1d, np.clip(rng.normal(24.0, 3.0, n), 18, 33), bmi)
    bmi = np.where(t2d, np.maximum(bmi, rng.normal(31.5, 4.5, n)), bmi)
    hypertension = u[:, 6] < _sigmoid(-1.8 + 0.06 * (age - 50) + 0.08 * (bmi - 27))
    afib = u[:, 7] < np.clip(0.01 + 0.0025 * (age - 50), 0.005, 0.2)
    heart_failure = u[:, 8] < np.clip(0.01 + 0.002 * (age - 50), 0.005, 0.15)
    prediabetes = ~(t1d | t2d) & (u[:, 9] < 0.10)
    obese = bmi >= 30

    # --- coded diagnoses (planted miscoding; evidence stays with the true phenotype) ---------
    v = rng.random((n, 3))
    coded_ra = (ra & (v[:, 0] >= profile.ra_as_oa_rate)) | (oa & (v[:, 0] < profile.oa_as_ra_rate))
    coded_oa = (oa & (v[:, 0] >= profile.oa_as_ra_rate)) | (ra & (v[:, 0] < profile.ra_as_oa_rate))
    coded_t1d = (t1d & (v[:, 1] >= profile.t1d_as_t2d_rate)) | (t2d & (v[:, 1] < profile.t2d_as_t1d_rate))
    coded_t2d = (t2d & (v[:, 1] >= profile.t2d_as_t1d_rate)) | (t1d & (v[:, 1] < profile.t1d_as_t2d_rate))
    swap = v[:, 2] < profile.asthma_copd_confusion_rate
    coded_copd = (copd & ~swap) | (asthma & swap)
    coded_asthma = (asthma & ~swap) | (copd & swap)

    # --- long-COVID severity, baseline state --------------------------------------------
    severity = rng.normal(0, 1, n) + 0.4 * heart_failure + 0.2 * copd + 0.15 * (age > 70)
    fatigue = np.clip(np.round(5 + 1.7 * severity + rng.normal(0, 1.0, n)), 0, 10)
    mmrc = np.clip(np.round(1.2 + 0.75 * severity + 0.9 * copd + 0.4 * asthma + 0.5 * heart_failure
                            + rng.normal(0, 0.6, n)), 0, 4)
    crp = np.exp(np.log(3.0) + 0.45 * severity + 1.3 * ra + 0.3 * oa + 0.3 * obese
                 + rng.normal(0, 0.7, n))
    crp = np.round(np.clip(crp, 0.2, 250), 1)
    walk0 = (560 - 3.2 * (age - 50) + 35 * ~female - 3.5 * (bmi - 27) - 9 * (fatigue - 5)
             - 12 * severity - 55 * copd - 20 * asthma - 60 * heart_failure - 25 * ra - 30 * oa
             + rng.normal(0, 40, n))
    walk0 = np.round(np.clip(walk0, 60, 750))
    resting_hr = np.round(np.clip(rng.normal(74, 9, n) + 4 * severity, 50, 115), 1)

    # --- timeline -------------------------------------------------------------------------
    later = len(dates) > 1
    span_later = (d_last - d_first).days
    fu_days = rng.integers(84, 100, n)
    gap = np.round(60 + rng.exponential(150, n)).astype(int)
    f_off = np.where(later & (rng.random(n) < 0.75),
                     rng.integers(0, max(span_later - 1, 1), n),
                     -rng.integers(1, 270, n))
    followup = np.array(_days(d_first, f_off))
    index = np.array([f - dt.timedelta(days=int(d)) for f, d in zip(followup, fu_days)])
    intake = np.array([None] * n, dtype=object)
    for i in np.flatnonzero(entry > 0):  # referrals: first visit after the previous cut-off
        k = entry[i]
        start = dates[k - 1] + dt.timedelta(days=int(rng.integers(1, 15)))
        intake[i] = start
        index[i] = start + dt.timedelta(days=int(rng.integers(0, 10)))
        followup[i] = index[i] + dt.timedelta(days=int(fu_days[i]))
        gap[i] = max(gap[i], 80)
    max_gap = np.array([(x - window_start).days - 30 for x in index])
    gap = np.minimum(gap, np.maximum(max_gap, 60))
    covid = np.array([x - dt.timedelta(days=int(g)) for x, g in zip(index, gap)])
    lc_dx = np.array([c + dt.timedelta(days=int(max(42, round(f * g))))
                      for c, g, f in zip(covid, gap, rng.uniform(0.55, 0.9, n))])
    for i in range(n):
        if entry[i] > 0:
            lc_dx[i] = intake[i]
        elif rng.random() < 0.8 and (covid[i] - window_start).days > 21:
            intake[i] = window_start + dt.timedelta(
                days=int(rng.integers(0, (covid[i] - window_start).days - 7)))
    recent = np.array([(x - c).days <= RECENT_INFECTION_DAYS for x, c in zip(index, covid)])
    outcome_observed = np.array([f < d_last for f in followup])

    hospitalized = (entry == 0) & (rng.random(n) < _sigmoid(-1.6 + 0.04 * (age - 55) + 0.5 * severity))
    ventilated = np.zeros(n, dtype=bool)
    if ventilator_available:
        cand = np.flatnonzero(hospitalized)
        n_vent = int(round(0.10 * n))
        if len(cand) and n_vent:
            w = np.exp(0.5 * severity[cand])
            chosen = rng.choice(cand, size=min(n_vent, len(cand)), replace=False, p=w / w.sum())
            ventilated[chosen] = True

    # --- treatment (confounded) and potential outcomes ----------------------------------
    prop = treatment_propensity(age, fatigue, walk0, crp, recent, profile.treatment_bias)
    cum = prop.cumsum(axis=1)
    arm_idx = (rng.random(n)[:, None] > cum).sum(axis=1).clip(0, len(ARMS) - 1)
    arm = np.array(ARMS)[arm_idx]
    natural = 18 + 15 * recent - 0.4 * (age - 55) - 3 * (fatigue - 5) + rng.normal(0, 28, n)
    tau = treatment_effects(age, walk0, crp, recent, profile.effect_shift)
    y = {a: np.round(np.clip(walk0 + natural + tau[a], 20, 850)) for a in ARMS}
    y_obs = np.choose(arm_idx, [y[a] for a in ARMS])

    df = pd.DataFrame({
        "site_id": profile.site_id,
        "entry_delivery": entry,
        "age_at_index": age, "female": female, "ever_smoker": smoker, "pack_years": pack_years,
        "height_cm": np.round(height_cm, 1), "bmi": np.round(bmi, 1),
        "true_ra": ra, "true_oa": oa, "true_t1d": t1d, "true_t2d": t2d,
        "true_asthma": asthma, "true_copd": copd,
        "coded_ra": coded_ra, "coded_oa": coded_oa, "coded_t1d": coded_t1d, "coded_t2d": coded_t2d,
        "coded_asthma": coded_asthma, "coded_copd": coded_copd,
        "hypertension": hypertension, "atrial_fibrillation": afib, "heart_failure": heart_failure,
        "prediabetes": prediabetes, "obese": obese,
        "severity": np.round(severity, 3), "fatigue_baseline": fatigue, "mmrc_baseline": mmrc,
        "crp_baseline_mg_l": crp, "resting_hr_bpm": resting_hr,
        "covid_date": covid, "long_covid_date": lc_dx, "intake_date": intake,
        "index_date": index, "followup_date": followup,
        "recent_infection": recent, "hospitalized": hospitalized, "ventilated": ventilated,
        "therapy_arm": arm, "baseline_6mwd_m": walk0,
    })
    for j, a in enumerate(ARMS):
        df[f"propensity_{a}"] = np.round(prop[:, j], 4)
    for a in ARMS:
        df[f"y_{a}"] = y[a]
    for a in ARMS:
        df[f"tau_{a}"] = y[a] - y["standard_care"]
    df["outcome_observed"] = outcome_observed
    df["observed_outcome_m"] = np.where(outcome_observed, y_obs, np.nan)
    return df
