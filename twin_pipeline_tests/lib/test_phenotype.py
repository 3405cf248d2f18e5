"""Phenotype reconciliation: knowledge rules on hand-made twins, and on a generated cohort with known truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib.phenotype import CALL_COLUMNS, PROBABILITY_COLUMNS, reconcile_phenotypes
from twin_pipeline.lib.twin import build_twins
from twin_pipeline_tests.lib.test_twin import omop_inputs, truth_by_pseudonym

NAN = np.nan


def _twin(**kw) -> dict:
    base = {f"dx_{g}": 0 for g in ("rheumatoid_arthritis", "osteoarthritis", "type1_diabetes", "type2_diabetes",
                                    "asthma", "copd")}
    base.update({"age_years": 60.0, "bmi": 27.0, "n_visits": 6})
    base.update(kw)
    return base


def test_miscoded_ra_with_oa_evidence_is_reconciled_to_oa():
    twins = pd.DataFrame([
        # coded RA, but seronegative, acetaminophen only, short stiffness, large weight-bearing joints
        _twin(dx_rheumatoid_arthritis=1, rf_iu_ml=6.0, anti_ccp_u_ml=2.0, on_dmard=0.0, on_analgesic=1.0,
              morning_stiffness_min=10.0, joint_pattern=2.0),
        # coded OA, but anti-CCP positive, on methotrexate, long stiffness, symmetric small joints
        _twin(dx_osteoarthritis=1, rf_iu_ml=80.0, anti_ccp_u_ml=150.0, on_dmard=1.0, on_analgesic=0.0,
              morning_stiffness_min=90.0, joint_pattern=1.0),
        # coded RA with no other evidence at all: the code stands
        _twin(dx_rheumatoid_arthritis=1),
        # nothing coded, nothing suggestive
        _twin(),
    ])
    out = reconcile_phenotypes(twins)
    assert out.loc[0, "p_osteoarthritis"] > 0.9 and out.loc[0, "p_rheumatoid_arthritis"] < 0.1
    assert out.loc[1, "p_rheumatoid_arthritis"] > 0.9 and not out.loc[1, "ph_osteoarthritis"]
    assert out.loc[2, "ph_rheumatoid_arthritis"] and not out.loc[2, "ph_osteoarthritis"]
    assert not out.loc[3, CALL_COLUMNS].any()
    assert (out.loc[3, PROBABILITY_COLUMNS] < 0.05).all()
    ev = json.loads(out.loc[0, "phenotype_evidence"])["inflammatory_vs_degenerative_arthritis"]
    assert ev["codes"] == {"rheumatoid_arthritis": 1, "osteoarthritis": 0}
    assert ev["terms"]["analgesic_only(acetaminophen)"] < 0 and ev["logodds_rheumatoid_arthritis"] < 0
    assert json.loads(out.loc[3, "phenotype_evidence"]) == {}


def test_diabetes_and_airway_pairs_follow_c_peptide_drugs_and_spirometry():
    twins = pd.DataFrame([
        _twin(dx_type2_diabetes=1, c_peptide_ng_ml=0.1, on_insulin=1.0, on_metformin=0.0, bmi=22.0, age_years=30.0),
        _twin(dx_type1_diabetes=1, c_peptide_ng_ml=2.6, on_insulin=0.0, on_metformin=1.0, bmi=33.0),
        _twin(dx_asthma=1, fev1_fvc_pct=52.0, on_lama=1.0, on_ics=0.0, age_years=70.0),
        _twin(dx_copd=1, fev1_fvc_pct=80.0, on_lama=0.0, on_ics=1.0, age_years=30.0),
    ])
    out = reconcile_phenotypes(twins)
    assert out.loc[0, "ph_type1_diabetes"] and not out.loc[0, "ph_type2_diabetes"]
    assert out.loc[1, "ph_type2_diabetes"] and not out.loc[1, "ph_type1_diabetes"]
    assert out.loc[2, "ph_copd"] and not out.loc[2, "ph_asthma"]
    assert out.loc[3, "ph_asthma"] and not out.loc[3, "ph_copd"]
    probs = out[PROBABILITY_COLUMNS].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    # a pair's two probabilities never add up to more than the family's
    assert (out["p_copd"] + out["p_asthma"] <= 1 + 1e-12).all()


def test_missing_columns_count_as_no_evidence():
    out = reconcile_phenotypes(pd.DataFrame([{"dx_copd": 2}]))
    assert out.loc[0, "ph_copd"] and out.loc[0, "p_copd"] > 0.5
    assert out.loc[0, "p_rheumatoid_arthritis"] < 0.05


@pytest.fixture(scope="module")
def miscoded_cohort(tmp_path_factory):
    """2 sites x ~90 patients; site 2 (hospital_b) codes ~40 % of osteoarthritis as rheumatoid arthritis."""
    from twin_pipeline.synth.generator import generate_cohort

    root = tmp_path_factory.mktemp("pheno")
    generate_cohort(root / "landing", sites=2, patients=90, seed=23, truth_dir=root / "truth",
                    sites_dir=root / "sites", deliveries=1,
                    waveform_seconds={"ecg_monitor": 2, "ventilator": 2, "wearable": 2})
    inputs = omop_inputs(root / "landing", root / "sites", root / "q")
    twins = build_twins(inputs, twin_version="t", built_at=pd.Timestamp("2026-12-01"))
    return twins.merge(truth_by_pseudonym(root / "truth"), on=["site_id", "person_id"], how="inner")


def _f1(pred: pd.Series, true: pd.Series) -> float:
    tp, fp, fn = (pred & true).sum(), (pred & ~true).sum(), (~pred & true).sum()
    return 2 * tp / (2 * tp + fp + fn)


def test_reconciliation_beats_the_raw_code_where_the_site_miscodes(miscoded_cohort):
    b = miscoded_cohort[miscoded_cohort["site_id"] == "hospital_b"]
    assert len(b) > 50
    true_ra, true_oa = b["true_ra"].astype(bool), b["true_oa"].astype(bool)
    raw_ra = b["dx_rheumatoid_arthritis"] > 0
    assert (raw_ra & ~true_ra).sum() >= 3  # the planted miscoding is there to be corrected
    assert _f1(b["ph_rheumatoid_arthritis"], true_ra) >= 0.9 > _f1(raw_ra, true_ra)
    assert _f1(b["ph_osteoarthritis"], true_oa) >= 0.9
    everyone = miscoded_cohort
    for short, group in [("t1d", "type1_diabetes"), ("t2d", "type2_diabetes"), ("asthma", "asthma"),
                         ("copd", "copd")]:
        assert _f1(everyone[f"ph_{group}"], everyone[f"true_{short}"].astype(bool)) >= 0.85, group
