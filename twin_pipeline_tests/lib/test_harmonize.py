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


def test_generator_ground_truth_same_true_value_same_canonical_value_at_every_site(vocab, tmp_path):
    """Three generated sites (own local codes, units, spellings), values emitted by the generator's own
    row factory and read back through each site's YAML: canonical value = true value at every site,
    within the rounding of the value the site wrote."""
    import datetime as dt

    from twin_pipeline.sources.landing import load_site_config
    from twin_pipeline.synth.ehr import _DECIMALS, _LOCAL_DECIMALS, _SiteEHR
    from twin_pipeline.synth.sites import load_vocab, site_profiles, write_site_yaml

    profiles = site_profiles(3)
    assert len({tuple(sorted(p.local_units)) for p in profiles}) == 3  # the sites really differ
    rng = np.random.default_rng(0)
    truth = {"2345-7": [62.0, 96.0, 180.0, 410.0], "2160-0": [0.55, 1.1, 3.4], "29463-7": [4.2, 71.3, 130.0],
             "8310-5": [35.9, 37.0, 39.4], "8302-2": [150.2, 181.0], "1988-5": [0.4, 12.0], "4548-4": [5.4, 8.1]}
    canon = {}
    for p in profiles:
        write_site_yaml(p, tmp_path)
        site = load_site_config(tmp_path, p.site_id)
        ehr = _SiteEHR(p, load_vocab(), rng)
        enc = {"START": dt.datetime(2026, 1, 1, 9), "PATIENT": "x", "Id": "e"}
        keys = []
        for loinc, values in truth.items():
            for v in values:
                ehr.observation(enc, loinc, v)
                keys.append((loinc, v))
        rows = ehr.rows.tables["observations"]
        df = _obs([[r["CODE"], r["VALUE"], r["UNITS"], r["TYPE"]] for r in rows])
        meas, _, rej = hz.harmonize_measurements(df, vocab, local_lab_codes=site.local_lab_codes,
                                                 unit_alias=site.unit_alias)
        assert rej.empty, (p.site_id, rej["_reason"].tolist())
        assert list(meas["measurement_concept_code"]) == [k[0] for k in keys]
        for (loinc, v), out, r in zip(keys, meas["value_as_number"], rows):
            factor = p.local_units[loinc][2] if loinc in p.local_units else 1.0
            decimals = _LOCAL_DECIMALS.get(r["UNITS"], _DECIMALS[loinc]) if loinc in p.local_units else _DECIMALS[loinc]
            tol = 0.5 * 10 ** -decimals / factor + 1e-9  # half a written digit, in canonical units
            assert abs(out - v) <= tol, (p.site_id, loinc, v, out)
            canon.setdefault((loinc, v), []).append(out)
    assert {p.site_id for p in profiles} == {"hospital_a", "hospital_b", "hospital_c"}
    # the widest cross-site spread is the coarsest site rounding (glucose written in mmol/L with 1 decimal)
    for (loinc, v), outs in canon.items():
        assert len(outs) == 3 and max(outs) - min(outs) <= 0.05 * 18.016 + 1e-6, (loinc, v, outs)


def test_unit_spelling_the_site_did_not_declare_is_quarantined_not_converted(vocab):
    site = SiteConfig("hospital_b", unit_aliases={"*": {"mmol/l": "mmol/L"}})
    df = _obs([["2345-7", "5.5", "mmol/l", "numeric"], ["2345-7", "5.5", "mmol/dl", "numeric"],
               ["2160-0", "88", "umol/l", "numeric"]])
    meas, _, rej = hz.harmonize_measurements(df, vocab, local_lab_codes={}, unit_alias=site.unit_alias)
    assert meas["value_as_number"].tolist() == pytest.approx([5.5 * 18.016])
    assert rej["unit_source"].tolist() == ["mmol/dl", "umol/l"]
    assert set(rej["_reason"]) == {"unknown unit for concept"}


def test_observation_domain_findings_leave_condition_occurrence(vocab):
    cond = pd.DataFrame({"source_code": ["160903007", "44054006", "999"], "condition_start": pd.Timestamp("2026-01-01"),
                         "condition_end": pd.NaT, "person_id": "P1", "visit_id": "E1", "description": "x",
                         "site_id": "s", "delivery_id": "d", "source_file": "conditions.csv", "source_row": [2, 3, 4]})
    full = hz.harmonize_conditions(cond, vocab)
    conds, obs = hz.split_condition_domains(full)
    assert conds["condition_source_value"].tolist() == ["44054006", "999"]
    assert obs["observation_concept_code"].tolist() == ["160903007"] and obs["source_row"].tolist() == [2]
    assert hz.condition_mapped(full).tolist() == [True, True, False]


def test_real_synthea_sample_coverage_per_vocabulary(vocab, tmp_path):
    """The 59-patient Synthea CSV export: every condition and drug code maps; the only unmapped
    numeric observations are Synthea's own DALY/QALY/QOLS (no LOINC exists for them)."""
    import os

    from twin_pipeline.lib import deid, deid_tables
    from twin_pipeline.sources.landing import Quarantine
    from twin_pipeline.sources.synthea_csv import EHR_TABLES, read_ehr
    from twin_pipeline_tests.conftest import TEST_SECRET, shared_data

    src = shared_data("ehr", "synthea_59", "csv")
    (tmp_path / "d" / "ehr").mkdir(parents=True)
    for t in EHR_TABLES:
        os.symlink(src / f"{t}.csv", tmp_path / "d" / "ehr" / f"{t}.csv")
    load = read_ehr(tmp_path / "d", SiteConfig("synthea"), "2022-03-04", Quarantine(tmp_path / "q", "synthea", "x"))
    frames = deid_tables.deidentify_ehr({t: load.tables[t].frame for t in EHR_TABLES},
                                        key=deid.DeidKey.from_secret(TEST_SECRET), site_id="synthea",
                                        delivery_id="2022-03-04", restricted_zip3=set())
    h = hz.harmonize_ehr(frames, vocab, local_lab_codes={}, unit_alias=SiteConfig("synthea").unit_alias)
    cov = h.coverage()
    assert cov["conditions_snomed"] == 1.0 and cov["drugs_rxnorm"] == 1.0
    meas = h.tables["measurement"]
    unmapped = set(meas.loc[meas["measurement_concept_code"] == hz.UNMAPPED, "measurement_source_value"])
    assert unmapped == {"DALY", "QALY", "QOLS"}
    assert h.rejected.empty
    assert 0.85 < cov["labs_loinc"] < 0.95
