"""Assemble one digital twin per patient from the harmonized and feature tables.

Grain: one row per (site, pseudonymous person). The twin gathers demographics, coded conditions,
labs around the index date, medication exposure, interview scores, waveform features, the study
therapy and the 90-day outcome, with provenance (deliveries and row counts per source) and a
completeness score. Pure pandas; no Dagster.

Index date: the clinic's baseline assessment, i.e. the first six-minute-walk measurement from 7 days
before the first post-acute COVID-19 (long-COVID) diagnosis on (the diagnosis date itself when no
walk test follows). Therapy: the first study-therapy drug or procedure from 7 days before to 30 days
after the index date, else `standard_care`. Baseline six-minute-walk distance: the measurement
closest to the index within [-30, +14] days; 90-day outcome: the one closest to day 90 within
[+60, +120] days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from twin_pipeline.lib.phenotype import reconcile_phenotypes

SIX_MWD = "64098-7"
LAB_FEATURES = {  # LOINC -> twin column (value in the canonical unit of data/vocab/measurements.csv)
    "1988-5": "crp_mg_l",
    "4548-4": "hba1c_pct",
    "19926-5": "fev1_fvc_pct",
    "11572-5": "rf_iu_ml",
    "32218-0": "anti_ccp_u_ml",
    "1986-9": "c_peptide_ng_ml",
    "2345-7": "glucose_mg_dl",
    "2160-0": "creatinine_mg_dl",
    "8480-6": "sbp_mmhg",
    "29463-7": "weight_kg",
    "8302-2": "height_cm",
    "59408-5": "spo2_pct",
}
CONDITION_GROUPS = [
    "rheumatoid_arthritis", "osteoarthritis", "type1_diabetes", "type2_diabetes", "asthma", "copd",
    "hypertension", "atrial_fibrillation", "heart_failure", "obesity", "covid19", "long_covid",
]
DRUG_CLASSES = {
    "csDMARD": "on_dmard", "NSAID": "on_nsaid", "analgesic": "on_analgesic", "insulin": "on_insulin",
    "biguanide": "on_metformin", "inhaled corticosteroid": "on_ics", "LAMA": "on_lama",
}
INTERVIEW_FIELDS = [
    "fatigue_score", "dyspnea_mmrc", "cognitive_complaints", "post_exertional_malaise", "joint_pain",
    "morning_stiffness_min", "joint_pattern",
]
WAVEFORM_FEATURES = {
    "ecg_monitor": ["hr_mean_bpm", "hrv_sdnn_ms", "hrv_rmssd_ms", "irregular_rr_fraction", "ecg_quality"],
    "ventilator": ["resp_rate_bpm", "tidal_volume_insp_ml", "peep_cmh2o", "dynamic_compliance_ml_cmh2o"],
    "wearable": ["resting_hr_bpm", "sedentary_fraction", "activity_counts_per_min"],
}
MODEL_FEATURES = [
    "age_years", "sex_male", "baseline_6mwd_m", "crp_mg_l", "hba1c_pct", "fev1_fvc_pct", "bmi",
    "fatigue_score", "dyspnea_mmrc", "post_exertional_malaise", "days_since_covid",
    "dx_copd", "dx_type2_diabetes", "dx_rheumatoid_arthritis", "hr_mean_bpm", "hrv_rmssd_ms",
    "resting_hr_bpm",
]


@dataclass
class TwinInputs:
    person: pd.DataFrame
    condition: pd.DataFrame
    measurement: pd.DataFrame
    drug: pd.DataFrame
    procedure: pd.DataFrame
    interview: pd.DataFrame  # features.interview_scores
    waveforms: dict[str, pd.DataFrame]  # device kind -> features.<kind>_record_features
    visit: pd.DataFrame | None = None  # omop.visit_occurrence (utilization); optional


def _latest_person(person: pd.DataFrame) -> pd.DataFrame:
    p = person.sort_values(["delivery_id"]).groupby(["site_id", "person_id"], as_index=False).last()
    n_deliv = person.groupby(["site_id", "person_id"])["delivery_id"].nunique().rename("n_deliveries")
    return p.merge(n_deliv.reset_index(), on=["site_id", "person_id"])


def _index_dates(condition: pd.DataFrame, measurement: pd.DataFrame) -> pd.DataFrame:
    keys = ["site_id", "person_id"]
    lc = condition[condition["phenotype_group"] == "long_covid"]
    dx = lc.groupby(keys)["condition_start_datetime"].min().rename("long_covid_date")
    cov = condition[condition["phenotype_group"] == "covid19"]
    first_cov = cov.groupby(keys)["condition_start_datetime"].min().rename("covid_date")
    out = pd.concat([dx, first_cov], axis=1).reset_index()
    walk = measurement.loc[measurement["measurement_concept_code"] == SIX_MWD, keys + ["measurement_datetime"]]
    walk = walk.merge(out[keys + ["long_covid_date"]].dropna(), on=keys)
    walk = walk[walk["measurement_datetime"] >= walk["long_covid_date"] - pd.Timedelta(days=7)]
    first_walk = walk.groupby(keys)["measurement_datetime"].min().rename("first_walk").reset_index()
    out = out.merge(first_walk, on=keys, how="left")
    out["index_date"] = out["first_walk"].fillna(out["long_covid_date"])
    return out.drop(columns=["first_walk"])


def _window_pick(events: pd.DataFrame, anchor: pd.DataFrame, time_col: str, value_col: str,
                 lo_days: float, hi_days: float, target_days: float) -> pd.Series:
    """Per (site, person): value of the event closest to anchor+target within [lo, hi] days of the anchor."""
    keys = ["site_id", "person_id"]
    e = events.drop(columns=["index_date"], errors="ignore").merge(anchor[keys + ["index_date"]], on=keys)
    d = (e[time_col] - e["index_date"]).dt.total_seconds() / 86400.0
    e = e[(d >= lo_days) & (d <= hi_days)].assign(_dist=(d - target_days).abs())
    if e.empty:
        return pd.Series(dtype="float64", name=value_col)
    best = e.sort_values("_dist").groupby(keys).head(1).set_index(keys)[value_col]
    return best


PROVENANCE_SOURCES = {  # twin column group -> (input attribute, provenance column)
    "ehr_person": "person",
    "ehr_conditions": "condition",
    "ehr_labs": "measurement",
    "ehr_drugs": "drug",
    "ehr_procedures": "procedure",
    "interviews": "interview",
}
PROVENANCE_COLUMNS = [f"prov_{g}" for g in PROVENANCE_SOURCES] + ["prov_waveforms"]


def _source_summary(df: pd.DataFrame | None, keys: list[str], name: str) -> pd.DataFrame:
    """Per patient: "<delivery>:<rows>;..." for one source table (which deliveries fed it, how many rows)."""
    if df is None or df.empty or "delivery_id" not in df.columns:
        return pd.DataFrame(columns=keys + [name])
    c = df.groupby(keys + ["delivery_id"]).size().rename("n").reset_index().sort_values(keys + ["delivery_id"])
    c["s"] = c["delivery_id"].astype(str) + ":" + c["n"].astype(str)
    return c.groupby(keys)["s"].agg(";".join).rename(name).reset_index()


def _provenance(inp: TwinInputs) -> pd.DataFrame:
    keys = ["site_id", "person_id"]
    out = _source_summary(inp.person, keys, "prov_ehr_person")
    for group, attr in PROVENANCE_SOURCES.items():
        if attr == "person":
            continue
        out = out.merge(_source_summary(getattr(inp, attr), keys, f"prov_{group}"), on=keys, how="outer")
    waves = [w.assign(delivery_id=w["delivery_id"].astype(str) + "/" + kind)
             for kind, w in inp.waveforms.items() if w is not None and len(w) and "delivery_id" in w.columns]
    wf = pd.concat(waves, ignore_index=True) if waves else None
    return out.merge(_source_summary(wf, keys, "prov_waveforms"), on=keys, how="outer")


def build_twins(inp: TwinInputs, *, twin_version: str, built_at: pd.Timestamp) -> pd.DataFrame:
    keys = ["site_id", "person_id"]
    twins = _latest_person(inp.person)[
        keys + ["gender", "age_years", "age_band", "year_of_birth", "zip3", "n_deliveries", "delivery_id"]
    ].rename(columns={"delivery_id": "last_delivery_id"})
    twins["sex_male"] = (twins["gender"] == "M").astype("float64")

    # conditions: code counts per phenotype group (raw diagnosis codes, before reconciliation)
    cond = inp.condition[inp.condition["phenotype_group"].notna()]
    counts = cond.groupby(keys + ["phenotype_group"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=CONDITION_GROUPS, fill_value=0).add_prefix("dx_").reset_index()
    twins = twins.merge(counts, on=keys, how="left")
    for g in CONDITION_GROUPS:
        twins[f"dx_{g}"] = twins[f"dx_{g}"].fillna(0).astype("int64")

    anchors = _index_dates(inp.condition, inp.measurement)
    twins = twins.merge(anchors, on=keys, how="left")
    twins["days_since_covid"] = (twins["index_date"] - twins["covid_date"]).dt.days.astype("float64")

    # labs: latest value on or before index+14 days (or latest overall when no index)
    m = inp.measurement[inp.measurement["measurement_concept_code"].isin(list(LAB_FEATURES) + [SIX_MWD])]
    m = m.merge(twins[keys + ["index_date"]], on=keys, how="inner")
    cutoff = m["index_date"].fillna(pd.Timestamp.max - pd.Timedelta(days=30)) + pd.Timedelta(days=14)
    labs = m[(m["measurement_concept_code"] != SIX_MWD) & (m["measurement_datetime"] <= cutoff)]
    latest = labs.sort_values("measurement_datetime").groupby(keys + ["measurement_concept_code"])["value_as_number"].last()
    latest = latest.unstack().rename(columns=LAB_FEATURES)
    latest = latest.reindex(columns=list(LAB_FEATURES.values()))
    twins = twins.merge(latest.reset_index(), on=keys, how="left")
    twins["bmi"] = twins["weight_kg"] / (twins["height_cm"] / 100.0) ** 2

    walk = m[m["measurement_concept_code"] == SIX_MWD]
    anchor = twins[keys + ["index_date"]].dropna(subset=["index_date"])
    base = _window_pick(walk, anchor, "measurement_datetime", "value_as_number", -30, 14, 0).rename("baseline_6mwd_m")
    out90 = _window_pick(walk, anchor, "measurement_datetime", "value_as_number", 60, 120, 90).rename("outcome_6mwd_90d_m")
    twins = twins.merge(base.reset_index(), on=keys, how="left").merge(out90.reset_index(), on=keys, how="left")

    # medications: ever exposed per class
    drug = inp.drug
    for cls, col in DRUG_CLASSES.items():
        ids = drug.loc[drug["drug_class"] == cls, keys].drop_duplicates().assign(**{col: 1.0})
        twins = twins.merge(ids, on=keys, how="left")
        twins[col] = twins[col].fillna(0.0)

    # therapy: first study-therapy event in [-7, +30] days of the index date
    d_ev = drug.loc[drug["therapy_arm"].notna(), keys + ["therapy_arm", "drug_exposure_start_datetime"]].rename(
        columns={"drug_exposure_start_datetime": "t"})
    p_ev = inp.procedure.loc[inp.procedure["therapy_arm"].notna(), keys + ["therapy_arm", "procedure_datetime"]].rename(
        columns={"procedure_datetime": "t"})
    ev = pd.concat([d_ev, p_ev]).merge(anchor, on=keys)
    rel = (ev["t"] - ev["index_date"]).dt.total_seconds() / 86400.0
    ev = ev[(rel >= -7) & (rel <= 30)].sort_values("t").groupby(keys).head(1)
    twins = twins.merge(ev[keys + ["therapy_arm"]].rename(columns={"therapy_arm": "therapy"}), on=keys, how="left")
    has_index = twins["index_date"].notna()
    twins["therapy"] = twins["therapy"].astype(object)
    twins.loc[has_index & twins["therapy"].isna(), "therapy"] = "standard_care"
    twins["therapy"] = twins["therapy"].astype("string")

    # interviews: baseline = first interview per patient
    iv = inp.interview
    if len(iv):
        first = iv.sort_values("interview_date").groupby(keys).head(1)
        cols = [c for c in INTERVIEW_FIELDS + ["symptom_burden"] if c in first.columns]
        twins = twins.merge(first[keys + cols], on=keys, how="left")
        n_iv = iv.groupby(keys).size().rename("n_interviews").reset_index()
        twins = twins.merge(n_iv, on=keys, how="left")
    for c in INTERVIEW_FIELDS + ["symptom_burden", "n_interviews"]:
        if c not in twins:
            twins[c] = np.nan
    twins["n_interviews"] = twins["n_interviews"].fillna(0).astype("int64")

    # waveforms: mean of usable records per patient
    n_rec_cols = []
    for kind, cols in WAVEFORM_FEATURES.items():
        wf = inp.waveforms.get(kind)
        col_n = f"n_{kind}_records"
        n_rec_cols.append(col_n)
        if wf is None or wf.empty:
            twins[col_n] = 0
            for c in cols:
                twins[c] = np.nan
            continue
        ok = wf[wf["quality_flag"] != "no_signal"]
        agg = ok.groupby(keys)[[c for c in cols if c in ok.columns]].mean()
        agg[col_n] = wf.groupby(keys).size()
        twins = twins.merge(agg.reset_index(), on=keys, how="left")
        twins[col_n] = twins[col_n].fillna(0).astype("int64")
        for c in cols:
            if c not in twins:
                twins[c] = np.nan

    # provenance and completeness
    n_meas = inp.measurement.groupby(keys).size().rename("n_measurements")
    n_cond = inp.condition.groupby(keys).size().rename("n_conditions")
    n_drug = inp.drug.groupby(keys).size().rename("n_drug_exposures")
    parts = [n_meas, n_cond, n_drug]
    if inp.visit is not None and len(inp.visit):
        parts.append(inp.visit.groupby(keys).size().rename("n_visits"))
    twins = twins.merge(pd.concat(parts, axis=1).reset_index(), on=keys, how="left")
    for c in ("n_measurements", "n_conditions", "n_drug_exposures", "n_visits"):
        twins[c] = twins[c].fillna(0).astype("int64") if c in twins else 0
    twins = twins.merge(_provenance(inp), on=keys, how="left")
    for c in PROVENANCE_COLUMNS:
        twins[c] = twins[c].astype("string")

    # reconciled phenotypes (codes + labs + drugs + interviews + utilization), with their evidence
    twins = pd.concat([twins, reconcile_phenotypes(twins)], axis=1)
    sources = pd.DataFrame(
        {
            "ehr": (twins["n_conditions"] + twins["n_measurements"]) > 0,
            "labs": twins[["crp_mg_l", "hba1c_pct", "fev1_fvc_pct"]].notna().any(axis=1),
            "interview": twins["n_interviews"] > 0,
            "waveform": twins[n_rec_cols].sum(axis=1) > 0,
            "outcome": twins["outcome_6mwd_90d_m"].notna(),
        }
    )
    twins["completeness"] = sources.mean(axis=1).astype("float64")
    twins["twin_version"] = twin_version
    twins["built_at"] = built_at
    drop = ["covid_date", "long_covid_date", "gender"]
    twins = twins.drop(columns=drop)
    return twins.sort_values(keys).reset_index(drop=True)


# ---- versions: the current twins are replaced each run; every version is kept in a history table ----

HISTORY_TABLE = "twin.patient_twin_history"
CURRENT_TABLE = "twin.patient_twin"


def _columns(conn, table: str) -> dict[str, str]:
    schema, name = table.split(".")
    rows = conn.execute(
        "select column_name, data_type from information_schema.columns where table_schema = ? and table_name = ? "
        "order by ordinal_position", [schema, name]).fetchall()
    return {c: t for c, t in rows}


def drop_current_if_schema_changed(conn, twins: pd.DataFrame, table: str = CURRENT_TABLE) -> bool:
    """The current-twin table is rewritten whole each version; if the twin gained or lost columns,
    drop it so the new schema can be created (past versions live in the history table)."""
    cols = _columns(conn, table)
    if cols and set(cols) != set(map(str, twins.columns)):
        conn.execute(f"drop table {table}")
        return True
    return False


def append_history(conn, twins: pd.DataFrame, table: str = HISTORY_TABLE) -> int:
    """Append one twin version (``twins`` must hold exactly one ``twin_version``) to the history table.

    Idempotent per version (a retried run replaces its own rows); columns a newer twin gained are
    added to the table (older versions read NULL there). Returns the rows written.
    """
    versions = twins["twin_version"].dropna().unique()
    if len(versions) != 1 or twins["twin_version"].isna().any():
        raise ValueError(f"append_history needs exactly one twin_version per call, got {len(versions)}")
    schema = table.split(".")[0]
    frame = twins.copy()
    for col in frame.columns:  # all-null object columns would be typed NULL by DuckDB
        if frame[col].dtype == object and frame[col].isna().all():
            frame[col] = frame[col].astype("string")
    conn.register("_twin_version_frame", frame)
    try:
        conn.execute(f"create schema if not exists {schema}")
        conn.execute(f"create table if not exists {table} as select * from _twin_version_frame limit 0")
        have = _columns(conn, table)
        types = dict(conn.execute("select column_name, column_type from (describe select * from _twin_version_frame)")
                     .fetchall())
        for col, typ in types.items():
            if col not in have:
                conn.execute(f'alter table {table} add column "{col}" {typ}')
        conn.execute(f"delete from {table} where twin_version = ?", [str(versions[0])])
        conn.execute(f"insert into {table} by name select * from _twin_version_frame")
    finally:
        conn.unregister("_twin_version_frame")
    return len(frame)


def twin_versions(conn, table: str = HISTORY_TABLE) -> pd.DataFrame:
    """Every twin version in the history: twin_version, built_at, twins, sites (oldest first)."""
    return conn.execute(
        f"select twin_version, min(built_at) as built_at, count(*) as twins, count(distinct site_id) as sites "
        f"from {table} group by twin_version order by built_at").df()


def twins_as_of(conn, version: str | None = None, *, person_id: str | None = None,
                table: str = HISTORY_TABLE) -> pd.DataFrame:
    """The twins of one version (default: the latest), optionally one patient's twin only.

    Columns a version did not have yet are dropped, so the frame looks as that version was built.
    """
    if version is None:
        row = conn.execute(f"select twin_version from {table} order by built_at desc limit 1").fetchone()
        if row is None:
            raise LookupError(f"{table} is empty: no twin version has been built yet")
        version = row[0]
    sql = f"select * from {table} where twin_version = ?"
    params: list = [version]
    if person_id is not None:
        sql += " and person_id = ?"
        params.append(person_id)
    df = conn.execute(sql + " order by site_id, person_id", params).df()
    if df.empty and person_id is None:
        raise LookupError("unknown twin version")
    return df.dropna(axis=1, how="all") if len(df) else df


def history_problems(conn, version: str, expected_rows: int, table: str = HISTORY_TABLE) -> dict[str, int]:
    """Aggregate counts of history-contract violations for one version (all zero = healthy)."""
    dup = conn.execute(
        f"select count(*) from (select site_id, person_id, twin_version from {table} "
        f"group by all having count(*) > 1)").fetchone()[0]
    n = conn.execute(f"select count(*) from {table} where twin_version = ?", [version]).fetchone()[0]
    cols = _columns(conn, table)
    pcols = [c for c in cols if c.startswith("p_")]
    out_of_range = 0
    if pcols:
        cond = " or ".join(f'("{c}" < 0 or "{c}" > 1)' for c in pcols)
        out_of_range = conn.execute(f"select count(*) from {table} where twin_version = ? and ({cond})",
                                    [version]).fetchone()[0]
    untraceable = conn.execute(
        f"select count(*) from {table} where twin_version = ? and (prov_ehr_person is null or last_delivery_id is null)",
        [version]).fetchone()[0] if "prov_ehr_person" in cols else n
    return {"duplicate_patient_versions": int(dup), "row_count_mismatch": int(n != expected_rows),
            "probabilities_out_of_range": int(out_of_range), "untraceable_twins": int(untraceable)}
