"""4CE-style obfuscation, pooling and cross-site QC."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from twin_pipeline.lib import federated as fed


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=30),
    threshold=st.integers(0, 11),
)
def test_obfuscated_files_never_release_a_small_cell(counts, threshold):
    df = pd.DataFrame(
        {"siteid": "s", "cohort": "c", "age_group": [f"g{i}" for i in range(len(counts))], "sex": "all",
         "pts_all": [a for a, _ in counts], "pts_ever_severe": [b for _, b in counts],
         "mean_age": np.linspace(20, 80, len(counts))}
    )
    out = fed.obfuscate(df, "AgeSex", threshold)
    assert fed.small_cells(out, "AgeSex", threshold) == 0
    if threshold > 1:
        for c in ("pts_all", "pts_ever_severe"):
            released = out[c][out[c] != fed.MASK]
            assert ((released == 0) | (released >= threshold)).all()
        # every row kept carries at least one count at or above the threshold; means of masked groups are masked
        assert ((out[["pts_all", "pts_ever_severe"]] >= threshold).any(axis=1)).all()
        assert (out.loc[out["pts_all"] == fed.MASK, "mean_age"] == fed.MASK).all()
        kept = len(out)
        assert kept == int(((df[["pts_all", "pts_ever_severe"]] >= threshold).any(axis=1)).sum())
    else:
        assert out[["pts_all", "pts_ever_severe"]].equals(df[["pts_all", "pts_ever_severe"]])


def test_pooling_sums_released_counts_and_bounds_the_masked_ones():
    a = pd.DataFrame({"siteid": "a", "cohort": "c", "k": ["x", "y"], "n": [12, fed.MASK]})
    b = pd.DataFrame({"siteid": "b", "cohort": "c", "k": ["x", "y"], "n": [fed.MASK, 7]})
    pooled = fed.pool_counts([a, b], ["cohort", "k"], ["n"], {"a": 5, "b": 10}).set_index("k")
    assert pooled.loc["x", "n"] == 12 and pooled.loc["x", "n_masked_max"] == 9
    assert pooled.loc["y", "n"] == 7 and pooled.loc["y", "n_masked_max"] == 4 and pooled.loc["y", "n_sites"] == 2


def test_cross_site_qc_flags_a_unit_error_and_inconsistent_counts():
    labs = pd.DataFrame({
        "siteid": ["a", "b", "c", "a", "b", "c"], "loinc": ["2345-7"] * 3 + ["1988-5"] * 3,
        "mean_value_all": [110.0, 6.1, 105.0, 8.0, 9.0, 7.5], "pts_all": [20] * 6,
        "pts_ever_severe": [0] * 6, "pts_never_severe": [20] * 6,
    })
    age_sex = pd.DataFrame({
        "siteid": ["a", "a", "b", "b"], "age_group": ["all", "26to49", "all", "26to49"], "sex": "all",
        "pts_all": [30, 12, 10, 14], "pts_ever_severe": [0, 0, -5, 0],
    })
    qc = fed.cross_site_qc(age_sex, labs)
    assert qc["lab_unit_suspect"] == ["b:2345-7"]  # glucose in mmol/L at site b
    assert qc["subgroup_exceeds_total"] == ["b"]
    assert qc["negative_counts"] == ["b:AgeSex.pts_ever_severe"]


def test_age_groups_follow_4ce_bins():
    groups = fed.age_group(pd.Series([2.0, 20.9, 21.0, 49.5, 50.0, 79.9, 80.0, 90.0, np.nan]))
    assert list(groups) == ["00to02", "18to20", "21to25", "26to49", "50to69", "70to79", "80plus", "80plus", "other"]


def _tiny_site():
    t = pd.Timestamp
    person = pd.DataFrame({"person_id": ["P1", "P2", "P3", "P4"], "delivery_id": "2026-10-01",
                           "age_years": [30.0, 55.0, 82.0, 60.0], "gender": ["F", "M", "F", "U"],
                           "death_date": [pd.NaT, pd.NaT, t("2026-03-01"), pd.NaT], "site_id": "s"})
    condition = pd.DataFrame({
        "person_id": ["P1", "P2", "P3", "P4", "P1"], "site_id": "s",
        "phenotype_group": ["long_covid", "long_covid", "long_covid", "covid19", "hypertension"],
        "condition_start_datetime": [t("2026-01-10"), t("2026-01-12"), t("2026-01-20"), t("2026-01-01"),
                                     t("2025-12-01")],
        "condition_concept_code": ["U09.9", "U09.9", "U09.9", "U07.1", "I10"],
    })
    procedure = pd.DataFrame({"person_id": ["P3"], "procedure_source_value": ["40617009"],
                              "procedure_concept_code": ["40617009"], "procedure_datetime": [t("2026-01-21")]})
    drug = pd.DataFrame({"person_id": ["P1", "P2"], "drug_class": ["NSAID", "NSAID"],
                         "drug_exposure_start_datetime": [t("2026-01-15"), t("2026-03-30")]})
    return person, condition, procedure, drug


def test_site_files_count_patients_once_per_cell_with_margins():
    person, condition, procedure, drug = _tiny_site()
    index = fed.cohort_index(condition)
    assert sorted(index["person_id"]) == ["P1", "P2", "P3"]  # P4 has no long-COVID diagnosis
    age_sex = fed.site_age_sex("s", person, index, procedure).set_index(["age_group", "sex"])
    assert age_sex.loc[("all", "all"), "pts_all"] == 3
    assert age_sex.loc[("all", "all"), "pts_ever_severe"] == 1  # P3 was ventilated
    assert age_sex.loc[("all", "female"), "pts_all"] == 2
    assert age_sex.loc[("80plus", "all"), "mean_age"] == 82.0
    dpm = fed.site_diag_proc_med("s", index, condition, drug, procedure).set_index(["concept_type", "concept_code"])
    assert dpm.loc[("DIAG-ICD10", "I10"), "pts_all_before_adm"] == 1
    assert dpm.loc[("MED-CLASS", "NSAID"), "pts_all_day0to29"] == 1 and dpm.loc[("MED-CLASS", "NSAID"), "pts_all_day30to89"] == 1
    daily = fed.site_daily_counts("s", index, person)
    assert daily["cumulative_pts_all"].iloc[-1] == 3 and daily["cumulative_pts_all"].is_monotonic_increasing


@settings(max_examples=100, deadline=None)
@given(
    sites=st.lists(st.lists(st.integers(0, 30), min_size=3, max_size=3), min_size=1, max_size=4),
    thresholds=st.lists(st.integers(0, 11), min_size=4, max_size=4),
)
def test_obfuscated_bounds_contain_the_true_cross_site_total(sites, thresholds):
    """Whatever obfuscation masked or dropped, the bounds from the released files contain the truth."""
    cells = [("g0", "all"), ("g1", "all"), ("g2", "all")]
    frames, th = [], {}
    for i, counts in enumerate(sites):
        site = f"s{i}"
        th[site] = thresholds[i]
        raw = pd.DataFrame({"siteid": site, "cohort": "c", "age_group": [c[0] for c in cells], "sex": "all",
                            "pts_all": counts, "pts_ever_severe": 0})
        frames.append(fed.obfuscate(raw[raw["pts_all"] > 0], "AgeSex", thresholds[i]))
    b = fed.obfuscated_bounds(frames, ["age_group", "sex"], cells, "pts_all", th, sites=sorted(th))
    truth = np.sum(np.array(sites), axis=0)
    assert (b["lower"].to_numpy() <= truth).all() and (truth <= b["upper"].to_numpy()).all()


def test_patient_level_helpers_reproduce_the_released_files():
    """age_sex_cell_counts / dpm_patient_cells (used by DP and HE) agree with site_age_sex / site_diag_proc_med."""
    t0 = pd.Timestamp("2024-03-01")
    person = pd.DataFrame({"person_id": ["a", "b", "c"], "delivery_id": "d1", "age_years": [30.0, 55.0, 81.0],
                           "gender": ["F", "M", "F"], "death_date": pd.NaT})
    condition = pd.DataFrame({
        "site_id": "s", "person_id": ["a", "b", "c", "a", "c"], "phenotype_group": ["long_covid"] * 3 + ["other"] * 2,
        "condition_start_datetime": [t0, t0, t0 + pd.Timedelta(days=3), t0 - pd.Timedelta(days=100), t0],
        "condition_concept_code": ["U09.9", "U09.9", "U09.9", "E11.9", "I10"],
    })
    drug = pd.DataFrame({"person_id": ["a", "b"], "drug_exposure_start_datetime": [t0 + pd.Timedelta(days=40), t0],
                         "drug_class": ["antiviral", "antiviral"]})
    procedure = pd.DataFrame({"person_id": ["b"], "procedure_datetime": [t0 + pd.Timedelta(days=2)],
                              "procedure_concept_code": ["40617009"], "procedure_source_value": ["40617009"]})
    index = fed.cohort_index(condition)
    released = fed.site_age_sex("s", person, index, procedure).set_index(["age_group", "sex"])
    cells = fed.age_sex_cell_counts(fed.age_sex_patients(person, index, procedure))
    assert len(cells) == len(fed.AGE_SEX_CELLS) and cells["pts_all"].sum() == 3
    margins = fed.with_age_sex_margins(cells, ["pts_all", "pts_ever_severe"]).set_index(["age_group", "sex"])
    for key, row in released.iterrows():
        assert margins.loc[key, "pts_all"] == row["pts_all"], key
        assert margins.loc[key, "pts_ever_severe"] == row["pts_ever_severe"], key
    dpm = fed.site_diag_proc_med("s", index, condition, drug, procedure).set_index(["concept_type", "concept_code"])
    per = (fed.dpm_patient_cells(index, condition, drug, procedure)
           .groupby(["concept_type", "concept_code", "window"]).size().unstack("window")
           .reindex(columns=list(fed.DPM_WINDOWS)).fillna(0).astype("int64"))
    assert per.reindex(dpm.index).equals(dpm[list(fed.DPM_WINDOWS)])
