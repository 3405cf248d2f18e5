"""4CE-style shareable aggregates: what a site may release, obfuscated, and how a coordinator pools them.

Follows the 4CE consortium's Phase 1.2 shared files (`../shared/data/federated/4ce/PhaseX.2/`): per site
and cohort, `AgeSex`, `DiagProcMed`, `Labs` and `DailyCounts`, with 4CE column names. Obfuscation as 4CE
does it: a count below the site's threshold is replaced by the masking value `-99`, statistics of a
masked group are masked too, and rows whose counts are all masked or zero are removed. `-999` means
"not available at this site". Everything here works on de-identified `omop` tables; only the outputs of
`site_*` functions may leave a site.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MASK = -99
NOT_AVAILABLE = -999
COHORT = "LongCovid"
AGE_GROUPS = [(0, 2, "00to02"), (3, 5, "03to05"), (6, 11, "06to11"), (12, 17, "12to17"), (18, 20, "18to20"),
              (21, 25, "21to25"), (26, 49, "26to49"), (50, 69, "50to69"), (70, 79, "70to79"), (80, 200, "80plus")]
SEXES = ("female", "male", "other")
# public, agreed finest AgeSex cells (every site, every mode): 4CE age groups + `other` × sex
AGE_SEX_CELLS: list[tuple[str, str]] = [(g, sx) for g in [name for _, _, name in AGE_GROUPS] + ["other"] for sx in SEXES]
VENTILATION_PROCEDURE = "40617009"  # 4CE's severity algorithm counts mechanical ventilation as severe
DPM_WINDOWS = {  # 4CE DiagProcMed windows, days relative to the index date
    "pts_all_before_adm": (-365, -15),
    "pts_all_since_adm": (0, None),
    "pts_all_dayN14toN1": (-14, -1),
    "pts_all_day0to29": (0, 29),
    "pts_all_day30to89": (30, 89),
    "pts_all_day30plus": (30, None),
}
COUNT_COLUMNS = {
    "AgeSex": ["pts_all", "pts_ever_severe"],
    "DiagProcMed": list(DPM_WINDOWS),
    "Labs": ["pts_all", "pts_ever_severe", "pts_never_severe"],
    "DailyCounts": ["cumulative_pts_all", "cumulative_pts_dead"],
}
STAT_COLUMNS = {  # statistics of a group: masked when the group's count is masked
    "AgeSex": {"mean_age": "pts_all"},
    "Labs": {
        "mean_value_all": "pts_all", "stdev_value_all": "pts_all",
        "mean_log_value_all": "pts_all", "stdev_log_value_all": "pts_all",
    },
}


def age_group(age: pd.Series) -> pd.Series:
    out = pd.Series("other", index=age.index, dtype=object)
    for lo, hi, name in AGE_GROUPS:
        out[(age >= lo) & (age <= hi + 0.999)] = name
    return out


def cohort_index(condition: pd.DataFrame) -> pd.DataFrame:
    """Per patient: the index date (first long-COVID diagnosis). One row per (site_id, person_id)."""
    lc = condition[condition["phenotype_group"] == "long_covid"]
    return lc.groupby(["site_id", "person_id"], as_index=False)["condition_start_datetime"].min().rename(
        columns={"condition_start_datetime": "index_date"}
    )


def _severe(index: pd.DataFrame, procedure: pd.DataFrame) -> pd.Series:
    vent = procedure.loc[procedure["procedure_source_value"].astype(str) == VENTILATION_PROCEDURE, "person_id"]
    return index["person_id"].isin(set(vent))


def age_sex_patients(person: pd.DataFrame, index: pd.DataFrame, procedure: pd.DataFrame) -> pd.DataFrame:
    """Site-local, patient-level: one row per cohort patient with `age_years`, `age_group`, `sex`
    (female/male/other) and `severe` (ever ventilated). Never leaves the site."""
    p = person.sort_values("delivery_id").groupby("person_id", as_index=False).last()
    df = index.merge(p[["person_id", "age_years", "gender"]], on="person_id", how="left")
    df["severe"] = _severe(df, procedure)
    df["age_group"] = age_group(df["age_years"])
    df["sex"] = df["gender"].map({"F": "female", "M": "male"}).fillna("other")
    return df


def age_sex_cell_counts(patients: pd.DataFrame) -> pd.DataFrame:
    """Unobfuscated patients per public AgeSex cell (`AGE_SEX_CELLS` order, zero cells included):
    columns age_group, sex, pts_all, pts_ever_severe. Site-local (small counts are not masked)."""
    unknown = set(zip(patients["age_group"], patients["sex"])) - set(AGE_SEX_CELLS)
    if unknown:
        raise ValueError(f"AgeSex cells outside the public cell list: {sorted(unknown)}")
    key = pd.MultiIndex.from_tuples(AGE_SEX_CELLS, names=["age_group", "sex"])
    g = patients.groupby(["age_group", "sex"])
    return pd.DataFrame({
        "pts_all": g.size().reindex(key, fill_value=0).astype("int64"),
        "pts_ever_severe": g["severe"].sum().reindex(key, fill_value=0).astype("int64"),
    }).reset_index()


def with_age_sex_margins(cells: pd.DataFrame, count_cols: list[str]) -> pd.DataFrame:
    """Finest AgeSex cells plus the 4CE `all` margins (age group × all, all × sex, all × all), as sums."""
    parts = [
        cells[["age_group", "sex", *count_cols]],
        cells.groupby("age_group", as_index=False, sort=False)[count_cols].sum().assign(sex="all"),
        cells.groupby("sex", as_index=False, sort=False)[count_cols].sum().assign(age_group="all"),
        cells[count_cols].sum().to_frame().T.assign(age_group="all", sex="all"),
    ]
    return pd.concat(parts, ignore_index=True)[["age_group", "sex", *count_cols]]


def site_age_sex(site_id: str, person: pd.DataFrame, index: pd.DataFrame, procedure: pd.DataFrame) -> pd.DataFrame:
    """4CE AgeSex: patients per age group × sex (plus `all` margins), mean age, ever-severe count."""
    df = age_sex_patients(person, index, procedure)
    rows = []
    for ag in [None, *df["age_group"].unique()]:
        for sx in [None, *df["sex"].unique()]:
            mask = pd.Series(True, index=df.index)
            if ag:
                mask &= df["age_group"] == ag
            if sx:
                mask &= df["sex"] == sx
            g = df[mask]
            if g.empty:
                continue
            rows.append({
                "siteid": site_id, "cohort": COHORT, "age_group": ag or "all",
                "mean_age": float(g["age_years"].mean()) if ag != "other" else NOT_AVAILABLE,
                "sex": sx or "all", "pts_all": int(len(g)), "pts_ever_severe": int(g["severe"].sum()),
            })
    return pd.DataFrame(rows)


def _dpm_events(index: pd.DataFrame, condition: pd.DataFrame, drug: pd.DataFrame,
                procedure: pd.DataFrame) -> pd.DataFrame:
    """Site-local events (person_id, concept_type, concept_code, day since index) of cohort patients."""
    ev = pd.concat(
        [
            pd.DataFrame({"person_id": condition["person_id"], "t": condition["condition_start_datetime"],
                          "concept_type": "DIAG-ICD10",
                          "concept_code": condition["condition_concept_code"].astype(str).str[:3]}),
            pd.DataFrame({"person_id": drug["person_id"], "t": drug["drug_exposure_start_datetime"],
                          "concept_type": "MED-CLASS", "concept_code": drug["drug_class"].astype(str)}),
            pd.DataFrame({"person_id": procedure["person_id"], "t": procedure["procedure_datetime"],
                          "concept_type": "PROC-GROUP",
                          "concept_code": procedure["procedure_concept_code"].astype(str)}),
        ],
        ignore_index=True,
    )
    ev = ev[~ev["concept_code"].isin(["unm", "unmapped", "<NA>", "nan", "None"])]
    ev = ev.merge(index[["person_id", "index_date"]], on="person_id", how="inner")
    ev["day"] = (ev["t"] - ev["index_date"]).dt.days
    return ev


def _in_window(day: pd.Series, lo: int, hi: int | None) -> pd.Series:
    m = day >= lo
    if hi is not None:
        m &= day <= hi
    return m


def dpm_patient_cells(index: pd.DataFrame, condition: pd.DataFrame, drug: pd.DataFrame,
                      procedure: pd.DataFrame) -> pd.DataFrame:
    """Site-local, patient-level: the distinct DiagProcMed cells each patient counts in, as rows
    (person_id, concept_type, concept_code, window) with `window` one of `DPM_WINDOWS`. A patient's
    row count is its contribution (L1 sensitivity) to the DiagProcMed file. Never leaves the site."""
    ev = _dpm_events(index, condition, drug, procedure)
    parts = [
        ev.loc[_in_window(ev["day"], lo, hi), ["person_id", "concept_type", "concept_code"]].drop_duplicates()
        .assign(window=col)
        for col, (lo, hi) in DPM_WINDOWS.items()
    ]
    return pd.concat(parts, ignore_index=True)


def site_diag_proc_med(site_id: str, index: pd.DataFrame, condition: pd.DataFrame, drug: pd.DataFrame,
                       procedure: pd.DataFrame) -> pd.DataFrame:
    """4CE DiagProcMed: patients with each concept in each window around the index date."""
    ev = _dpm_events(index, condition, drug, procedure)
    out = None
    for col, (lo, hi) in DPM_WINDOWS.items():
        m = ev["day"] >= lo
        if hi is not None:
            m &= ev["day"] <= hi
        c = ev[m].groupby(["concept_type", "concept_code"])["person_id"].nunique().rename(col)
        out = c.to_frame() if out is None else out.join(c, how="outer")
    out = out.fillna(0).astype("int64").reset_index()
    out.insert(0, "cohort", COHORT)
    out.insert(0, "siteid", site_id)
    return out


def site_labs(site_id: str, index: pd.DataFrame, measurement: pd.DataFrame, procedure: pd.DataFrame,
              loincs: list[str]) -> pd.DataFrame:
    """4CE Labs: per LOINC and day since index, patients and mean/sd of value and log(value + 0.5)."""
    m = measurement[measurement["measurement_concept_code"].isin(loincs)]
    m = m.merge(index[["person_id", "index_date"]], on="person_id", how="inner")
    m["days_since_admission"] = (m["measurement_datetime"] - m["index_date"]).dt.days
    m = m[m["days_since_admission"] >= 0]
    severe = set(index.loc[_severe(index, procedure), "person_id"])
    m["severe"] = m["person_id"].isin(severe)
    # one value per patient and day (the mean), as 4CE does
    per = m.groupby(["measurement_concept_code", "days_since_admission", "person_id"], as_index=False).agg(
        value=("value_as_number", "mean"), severe=("severe", "first"))
    per["logv"] = np.log(per["value"].clip(lower=0) + 0.5)
    g = per.groupby(["measurement_concept_code", "days_since_admission"])
    out = g.agg(
        pts_all=("person_id", "nunique"), mean_value_all=("value", "mean"), stdev_value_all=("value", "std"),
        mean_log_value_all=("logv", "mean"), stdev_log_value_all=("logv", "std"),
        pts_ever_severe=("severe", "sum"),
    ).reset_index().rename(columns={"measurement_concept_code": "loinc"})
    out["pts_never_severe"] = out["pts_all"] - out["pts_ever_severe"]
    for c in ("stdev_value_all", "stdev_log_value_all"):
        out[c] = out[c].fillna(0.0)  # 4CE: 0 if one patient
    out["pts_ever_severe"] = out["pts_ever_severe"].astype("int64")
    out.insert(0, "cohort", COHORT)
    out.insert(0, "siteid", site_id)
    return out


def site_daily_counts(site_id: str, index: pd.DataFrame, person: pd.DataFrame) -> pd.DataFrame:
    """4CE DailyCounts: cumulative patients (by index date) and deaths per calendar date.

    Dates are the de-identified (per-patient shifted) dates, so daily curves are blurred by up to the
    shift window; ICU and severity by date are not available here (-999)."""
    if index.empty:
        return pd.DataFrame(columns=["siteid", "cohort", "calendar_date", *COUNT_COLUMNS["DailyCounts"]])
    p = person.sort_values("delivery_id").groupby("person_id", as_index=False).last()
    df = index.merge(p[["person_id", "death_date"]], on="person_id", how="left")
    days = pd.date_range(df["index_date"].min().normalize(), df["index_date"].max().normalize(), freq="D")
    idx_days = np.sort(df["index_date"].dt.normalize().to_numpy())
    death_days = np.sort(df["death_date"].dropna().dt.normalize().to_numpy())
    out = pd.DataFrame({
        "siteid": site_id, "cohort": COHORT, "calendar_date": days.strftime("%Y-%m-%d"),
        "cumulative_pts_all": np.searchsorted(idx_days, days.to_numpy(), side="right"),
        "cumulative_pts_dead": np.searchsorted(death_days, days.to_numpy(), side="right"),
    })
    for col in ("cumulative_pts_icu", "cumulative_pts_severe", "pts_in_hosp_on_this_date", "pts_in_icu_on_this_date"):
        out[col] = NOT_AVAILABLE
    return out


def obfuscate(df: pd.DataFrame, file: str, threshold: int) -> pd.DataFrame:
    """Mask counts in 1..threshold-1 with -99 (and the statistics of masked groups), then drop rows
    whose counts are all masked or zero. Thresholds ≤ 1 leave the data as is (4CE: 0 = no masking)."""
    out = df.copy()
    counts = [c for c in COUNT_COLUMNS[file] if c in out.columns]
    if threshold > 1 and len(out):
        for stat, basis in STAT_COLUMNS.get(file, {}).items():
            if stat in out.columns:
                small = (out[basis] > 0) & (out[basis] < threshold)
                out[stat] = out[stat].astype("float64").where(~small, float(MASK))
        for c in counts:
            small = (out[c] > 0) & (out[c] < threshold)
            out[c] = out[c].where(~small, MASK)
        informative = np.zeros(len(out), dtype=bool)
        for c in counts:
            informative |= out[c].to_numpy() >= threshold
        out = out[informative]
    return out.reset_index(drop=True)


def small_cells(df: pd.DataFrame, file: str, threshold: int) -> int:
    """Cells that would break the release rule: a count in 1..threshold-1 that is not masked."""
    counts = [c for c in COUNT_COLUMNS[file] if c in df.columns]
    return int(sum(((df[c] > 0) & (df[c] < threshold)).sum() for c in counts)) if threshold > 1 else 0


def pool_counts(frames: list[pd.DataFrame], keys: list[str], count_cols: list[str],
                thresholds: dict[str, int]) -> pd.DataFrame:
    """Coordinator pooling of obfuscated counts: exact sum of released values plus the range the masked
    cells can hide (each -99 stands for 1..threshold-1 of its site)."""
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    rows = []
    for key, g in df.groupby(keys, dropna=False):
        rec = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        rec["n_sites"] = int(g["siteid"].nunique())
        for c in count_cols:
            v = g[c]
            known = v[v >= 0]
            masked_sites = g.loc[v == MASK, "siteid"]
            rec[c] = int(known.sum())
            rec[f"{c}_masked_max"] = int(sum(max(thresholds.get(s, 1) - 1, 0) for s in masked_sites))
            rec[f"{c}_n_masked"] = int(len(masked_sites))
        rows.append(rec)
    return pd.DataFrame(rows)


def obfuscated_bounds(frames: list[pd.DataFrame], keys: list[str], cells: list[tuple], count_col: str,
                      thresholds: dict[str, int], sites: list[str] | None = None) -> pd.DataFrame:
    """What released (obfuscated) files say about the true cross-site total of `count_col` in each cell:
    a released count is exact, a `-99` stands for 1..threshold-1, and a row the site did not release
    (all counts small or zero) for 0..threshold-1. `sites` (default: those in `frames`) may include sites
    that released no row at all. Returns one row per cell: keys, `lower`, `upper`."""
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["siteid", *keys, count_col])
    sites = sorted(df["siteid"].unique()) if sites is None else sorted(sites)
    lookup = {(r["siteid"], *(r[k] for k in keys)): int(r[count_col]) for r in df.to_dict("records")}
    rows = []
    for cell in cells:
        lo = hi = 0
        for s in sites:
            small = max(int(thresholds.get(s, 1)) - 1, 0)
            v = lookup.get((s, *cell))
            if v is None:
                hi += small
            elif v == MASK:
                lo, hi = lo + 1, hi + small
            elif v >= 0:
                lo, hi = lo + v, hi + v
            else:
                raise ValueError(f"site {s}: {count_col}={v} in cell {cell} is neither a count nor the mask")
        rows.append({**dict(zip(keys, cell)), "lower": lo, "upper": hi})
    return pd.DataFrame(rows)


def cross_site_qc(age_sex: pd.DataFrame, labs: pd.DataFrame, *, unit_ratio: float = 4.0) -> dict:
    """4CE-style checks before analysis: invalid negative counts, subgroup counts above the site total,
    and lab distributions whose site median is off the other sites' median by a unit-error-sized factor."""
    problems: dict[str, list] = {"negative_counts": [], "subgroup_exceeds_total": [], "lab_unit_suspect": []}
    for name, df in (("AgeSex", age_sex), ("Labs", labs)):
        for c in COUNT_COLUMNS[name]:
            if c in df.columns:
                bad = df[(df[c] < 0) & ~df[c].isin([MASK, NOT_AVAILABLE])]
                problems["negative_counts"] += sorted({f"{s}:{name}.{c}" for s in bad["siteid"]})
    if len(age_sex):
        total = age_sex[(age_sex["age_group"] == "all") & (age_sex["sex"] == "all")].set_index("siteid")["pts_all"]
        for site, g in age_sex.groupby("siteid"):
            if site in total.index and total[site] >= 0 and (g["pts_all"] > total[site]).any():
                problems["subgroup_exceeds_total"].append(site)
    if len(labs) and labs["siteid"].nunique() >= 2:
        ok = labs[labs["mean_value_all"] > 0]
        med = ok.groupby(["loinc", "siteid"])["mean_value_all"].median().unstack()
        for loinc, row in med.iterrows():
            for site, v in row.dropna().items():
                others = row.drop(site).dropna()
                if len(others) and others.median() > 0:
                    ratio = v / others.median()
                    if ratio > unit_ratio or ratio < 1 / unit_ratio:
                        problems["lab_unit_suspect"].append(f"{site}:{loinc}")
    return problems
