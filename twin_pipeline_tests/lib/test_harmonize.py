"""Harmonization: local codes → LOINC, units → canonical UCUM, unknown units rejected, coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib import harmonize as hz
from twin_pipeline.lib.interviews import interview_scores
from twin_pipeline.sources.landing import SiteConfig


@pytest.fixture(scope="module")
def vocab():
    return hz.load_vocabulary()


def _obs(rows):
    df = pd.DataFrame(rows, columns=["source_code", "value_source", "unit_source", "value_type"])
    df["person_id"] = "P0000000000000001"
    df["observation_datetime"] = pd.Timestamp("2026-01-01")
    df["site_id"], df["delivery_id"], df["source_file"] = "s", "2026-10-01", "observations.csv"
    df["source_row"] = range(2, 2 + len(df))
    return df


def test_same_true_value_gives_same_canonical_value_across_site_conventions(vocab):
    site_b = SiteConfig("hospital_b", local_lab_codes={"GLU": "2345-7", "CREA": "2160-0"},
                        unit_aliases={"*": {"mmol/l": "mmol/L", "umol/l": "umol/L"}})
    site_c = SiteConfig("hospital_c", unit_aliases={"*": {"lbs": "[lb_av]", "F": "[degF]"}})
    glucose_mg_dl, creat_mg_dl, weight_kg, temp_c = 126.0, 1.2, 80.0, 37.5
    a = _obs([["2345-7", glucose_mg_dl, "mg/dL", "numeric"], ["2160-0", creat_mg_dl, "mg/dL", "numeric"],
              ["29463-7", weight_kg, "kg", "numeric"], ["8310-5", temp_c, "Cel", "numeric"]])
    b = _obs([["GLU", glucose_mg_dl / 18.016, "mmol/l", "numeric"], ["CREA", creat_mg_dl / 0.011312, "umol/l", "numeric"]])
    c = _obs([["29463-7", weight_kg / 0.45359237, "lbs", "numeric"], ["8310-5", temp_c * 9 / 5 + 32, "F", "numeric"]])
    ma, _, ra = hz.harmonize_measurements(a, vocab, local_lab_codes={}, unit_alias=SiteConfig("a").unit_alias)
    mb, _, rb = hz.harmonize_measurements(b, vocab, local_lab_codes=site_b.local_lab_codes, unit_alias=site_b.unit_alias)
    mc, _, rc = hz.harmonize_measurements(c, vocab, local_lab_codes={}, unit_alias=site_c.unit_alias)
    assert ra.empty and rb.empty and rc.empty
    va = dict(zip(ma["measurement_concept_code"], ma["value_as_number"]))
    for m in (mb, mc):
        for code, v in zip(m["measurement_concept_code"], m["value_as_number"]):
            assert v == pytest.approx(va[code], rel=1e-6), code
    assert set(mb["measurement_source_value"]) == {"GLU", "CREA"}  # source kept beside the standard code
    assert set(mb["unit_concept_code"]) == {"mg/dL"}


def test_unknown_unit_is_rejected_not_guessed_and_unmapped_code_is_kept(vocab):
    df = _obs([["2345-7", "5.5", "mmol/mol", "numeric"], ["9999-9", "3", "mg", "numeric"],
               ["2345-7", "abc", "mg/dL", "numeric"], ["72166-2", "Never smoker", "", "text"]])
    meas, obs, rej = hz.harmonize_measurements(df, vocab, local_lab_codes={}, unit_alias=SiteConfig("a").unit_alias)
    assert list(rej["_reason"]) == ["unknown unit for concept", "non-numeric value for a numeric observation"]
    assert list(meas["measurement_concept_code"]) == [hz.UNMAPPED]
    assert len(obs) == 1 and obs["value_as_string"].iloc[0] == "Never smoker"
    assert len(meas) + len(obs) + len(rej) == len(df)


def test_plausibility_flags_values_off_by_a_unit_factor(vocab):
    df = _obs([["2345-7", "7.0", "mg/dL", "numeric"], ["2345-7", "110", "mg/dL", "numeric"],
               ["2345-7", "1980", "mg/dL", "numeric"]])
    meas, _, _ = hz.harmonize_measurements(df, vocab, local_lab_codes={}, unit_alias=SiteConfig("a").unit_alias)
    assert list(meas["range_flag"]) == ["low", "ok", "high"]


def test_conditions_and_drugs_map_with_coverage(vocab):
    cond = pd.DataFrame({"source_code": ["69896004", "44054006", "123"], "condition_start": pd.Timestamp("2026-01-01"),
                         "condition_end": pd.NaT, "person_id": "P1", "description": "x"})
    out = hz.harmonize_conditions(cond, vocab)
    assert list(out["condition_concept_code"]) == ["M06.9", "E11.9", hz.UNMAPPED]
    assert list(out["phenotype_group"].fillna("-")) == ["rheumatoid_arthritis", "type2_diabetes", "-"]
    cov = hz.mapping_coverage({"c": (out, "condition_concept_code")})
    assert cov["c"] == pytest.approx(2 / 3)
    drugs = pd.DataFrame({"source_code": ["197541", "105585"], "drug_start": pd.Timestamp("2026-01-01"),
                          "drug_end": pd.NaT, "person_id": "P1"})
    d = hz.harmonize_drugs(drugs, vocab)
    assert list(d["therapy_arm"].fillna("-")) == ["colchicine", "-"]
    assert list(d["drug_class"]) == ["anti-inflammatory", "csDMARD"]


def test_every_conversion_targets_the_concepts_canonical_unit(vocab):
    canon = vocab.measurements.set_index("loinc_code")["canonical_unit"]
    for r in vocab.conversions.itertuples():
        assert canon[r.loinc_code] == r.to_unit, r
        if r.from_unit == r.to_unit:
            assert (r.factor, r.offset) == (1.0, 0.0)


def test_interview_scores_scale_items_to_0_100():
    iv = pd.DataFrame({
        "site_id": "s", "delivery_id": "d", "interview_id": ["I1", "I2", "I3"], "person_id": ["P1", "P2", "P3"],
        "interview_date": pd.Timestamp("2026-01-01"),
        "fatigue_score": [10, 0, np.nan], "dyspnea_mmrc": [4, 0, np.nan], "cognitive_complaints": [1, 0, np.nan],
        "post_exertional_malaise": [1, 0, np.nan], "joint_pain": [1, 1, np.nan],
    })
    s = interview_scores(iv)
    assert s["symptom_burden"].iloc[0] == pytest.approx(100.0)
    assert s["symptom_burden"].iloc[1] == pytest.approx(20.0)
    assert np.isnan(s["symptom_burden"].iloc[2]) and s["items_answered"].iloc[2] == 0
