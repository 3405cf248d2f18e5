"""Differential privacy on released 4CE counts: OpenDP noise at the theoretical scale, ε accounting across
releases, refusal past the budget, and no small cell released after noise + obfuscation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin_pipeline.lib import dp
from twin_pipeline.lib import federated as fed

AGE_GROUPS = [g for _, _, g in fed.AGE_GROUPS] + ["other"]


def _patients(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "person_id": [f"p{i}" for i in range(n)],
        "age_group": rng.choice(AGE_GROUPS, n), "sex": rng.choice(list(fed.SEXES), n, p=[0.5, 0.45, 0.05]),
        "severe": rng.random(n) < 0.2,
    })


def test_noise_sd_and_95pct_error_match_the_discrete_laplace_mechanism():
    """Empirical sd / 95 % |error| of OpenDP's noise over many draws match the theoretical scale."""
    sensitivity, epsilon = dp.AGE_SEX_SENSITIVITY, 0.5  # AgeSex at the default ε = 1.0 per release
    noisy, scale, eps = dp.noisy_counts([100] * 40_000, sensitivity, epsilon)
    assert scale == pytest.approx(sensitivity / epsilon) and eps == pytest.approx(epsilon)
    noise = noisy - 100
    assert abs(noise.mean()) < 0.15
    assert noise.std() == pytest.approx(dp.noise_sd(scale), rel=0.04)
    assert dp.noise_sd(scale) == pytest.approx(math.sqrt(2) * scale, rel=0.02)  # ≈ continuous Laplace
    q95 = np.quantile(np.abs(noise), 0.95)
    assert abs(q95 - dp.abs_error_bound(scale)) <= 1.5


def test_opendp_privacy_map_charges_exactly_the_file_share():
    shares = dp.split_epsilon(1.0)
    assert sum(shares.values()) == pytest.approx(1.0) and set(shares) == {"AgeSex", "DiagProcMed"}
    _, scale, eps = dp.count_measurement(16, shares["DiagProcMed"])
    assert scale == pytest.approx(32.0) and eps == pytest.approx(0.5)
    with pytest.raises(ValueError, match="epsilon"):
        dp.count_measurement(2, 0.0)


def test_ledger_composes_releases_and_refuses_past_the_budget(tmp_path):
    path = tmp_path / "hospital_a" / "dp_ledger.json"
    ledger = dp.PrivacyLedger(path, "hospital_a", total_budget=2.5)
    for i in range(2):
        state = ledger.charge(f"run-{i}", dp.split_epsilon(1.0))
    assert state["spent"] == pytest.approx(2.0) and state["remaining"] == pytest.approx(0.5)
    before = path.read_text()
    with pytest.raises(dp.PrivacyBudgetExceeded) as exc:
        ledger.charge("run-2", dp.split_epsilon(1.0))
    msg = str(exc.value)
    assert "hospital_a" in msg and "spent ε=2" in msg and "requests ε=1" in msg and "total ε=2.5" in msg
    assert path.read_text() == before  # a refused release is not recorded
    ledger.charge("run-3", dp.split_epsilon(0.5))  # what is left can still be spent
    assert ledger.remaining() == pytest.approx(0.0)
    data = json.loads(path.read_text())
    assert data["site_id"] == "hospital_a" and len(data["releases"]) == 3
    for r in data["releases"]:  # ids, files, ε and timestamps only
        assert set(r) == {"release_id", "timestamp", "files", "epsilon"}
        assert set(r["files"]) == {"AgeSex", "DiagProcMed"}
    # a fresh ledger object (another run) reads the same spend back
    assert dp.PrivacyLedger(path, "hospital_a", 2.5).spent() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="belongs to site 'hospital_a'"):
        dp.PrivacyLedger(path, "hospital_b", 2.5).spent()


def test_dp_age_sex_is_consistent_and_unbiased_over_draws():
    patients = _patients(300)
    truth = fed.with_age_sex_margins(fed.age_sex_cell_counts(patients), ["pts_all", "pts_ever_severe"])
    totals = []
    for _ in range(200):
        out, rep = dp.dp_age_sex("s", patients, 0.5)
        assert (out["pts_all"] >= 0).all() and (out["pts_ever_severe"] <= out["pts_all"]).all()
        assert (out["mean_age"] == fed.NOT_AVAILABLE).all()  # not a count: not released under DP
        assert len(out) == len(truth)  # public cell list: the row set does not depend on the data
        totals.append(int(out.iloc[-1]["pts_all"]))
    # the all × all total is the sum of 33 unclamped noised cells: unbiased, sd = √33 × cell sd
    sd_total = math.sqrt(len(fed.AGE_SEX_CELLS)) * rep.noise_sd
    assert abs(np.mean(totals) - 300) < 4 * sd_total / math.sqrt(len(totals))
    assert np.std(totals) == pytest.approx(sd_total, rel=0.2)


def test_dp_age_sex_rejects_cells_outside_the_public_list():
    bad = pd.DataFrame({"age_group": ["27to30"], "sex": ["female"], "severe": [False]})
    with pytest.raises(ValueError, match="site_q.*outside the public cell list"):
        dp.dp_age_sex("site_q", bad, 0.5)


def test_contribution_bounding_caps_each_patient():
    rng = np.random.default_rng(1)
    cells = pd.DataFrame({"person_id": ["a"] * 30 + ["b"] * 3, "concept_type": "DIAG-ICD10",
                          "concept_code": [f"X{i:02d}" for i in range(30)] + ["Y01", "Y02", "Y03"],
                          "window": "pts_all_since_adm"})
    out = dp.bound_contributions(cells, 8, rng)
    assert out.groupby("person_id").size().to_dict() == {"a": 8, "b": 3}
    assert out[out["person_id"] == "b"].equals(cells[cells["person_id"] == "b"])


def test_public_concept_list_covers_the_mapped_codes_and_out_of_list_concepts_are_counted():
    concepts = dp.public_dpm_concepts()
    assert ("DIAG-ICD10", "U09") in concepts and ("PROC-GROUP", "40617009") in concepts
    assert any(t == "MED-CLASS" for t, _ in concepts) and len(concepts) == len(set(concepts))
    cells = pd.DataFrame({"person_id": ["a", "a"], "concept_type": ["DIAG-ICD10", "DIAG-ICD10"],
                          "concept_code": ["U09", "Q99"], "window": ["pts_all_since_adm", "pts_all_since_adm"]})
    out, rep = dp.dp_diag_proc_med("s", cells, 0.5, concepts, max_cells_per_patient=4)
    assert len(out) == len(concepts) and list(out.columns[4:]) == list(fed.DPM_WINDOWS)
    assert rep.extra["dp_concepts_outside_public_list"] == 1 and rep.sensitivity == 4
    assert rep.scale == pytest.approx(8.0)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 120), threshold=st.integers(0, 11), eps=st.sampled_from([0.1, 0.5, 1.0, 4.0]),
       seed=st.integers(0, 10_000))
def test_no_small_cell_is_released_after_noise_and_obfuscation(n, threshold, eps, seed):
    patients = _patients(n, seed)
    age_sex, _ = dp.dp_age_sex("s", patients, eps)
    shared = fed.obfuscate(age_sex, "AgeSex", threshold)
    assert fed.small_cells(shared, "AgeSex", threshold) == 0
    rng = np.random.default_rng(seed)
    concepts = [("DIAG-ICD10", f"C{i:02d}") for i in range(12)]
    cells = pd.DataFrame({
        "person_id": rng.integers(0, max(n, 1), 4 * n).astype(str),
        "concept_type": "DIAG-ICD10", "concept_code": rng.choice([c for _, c in concepts], 4 * n),
        "window": rng.choice(list(fed.DPM_WINDOWS), 4 * n),
    }).drop_duplicates()
    dpm, _ = dp.dp_diag_proc_med("s", cells, eps, concepts, max_cells_per_patient=3, rng=rng)
    shared = fed.obfuscate(dpm, "DiagProcMed", threshold)
    assert fed.small_cells(shared, "DiagProcMed", threshold) == 0
    if threshold > 1:
        for frame, file in ((fed.obfuscate(age_sex, "AgeSex", threshold), "AgeSex"), (shared, "DiagProcMed")):
            for c in fed.COUNT_COLUMNS[file]:
                v = frame[c]
                assert ((v == fed.MASK) | (v == 0) | (v >= threshold)).all()


def test_noise_scale_at_the_default_epsilon():
    """The figures quoted in .env.example / the closing note, at ε = 1.0 per release."""
    eps = dp.split_epsilon(dp.DEFAULT_EPSILON)
    age_scale = dp.laplace_scale(dp.AGE_SEX_SENSITIVITY, eps["AgeSex"])
    dpm_scale = dp.laplace_scale(dp.DEFAULT_MAX_CELLS_PER_PATIENT, eps["DiagProcMed"])
    assert (age_scale, dpm_scale) == (4.0, 32.0)
    for scale in (age_scale, dpm_scale):
        # discrete Laplace: P(|X| ≥ t) = 2 p^t / (1 + p), p = e^(-1/scale); solve for 5 %
        p = math.exp(-1 / scale)
        assert dp.abs_error_bound(scale) == pytest.approx(math.log(0.05 * (1 + p) / 2) / math.log(p), abs=0.01)
    assert round(dp.abs_error_bound(age_scale), 1) == 12.5 and round(dp.abs_error_bound(dpm_scale)) == 96


def test_dp_settings_from_env_strings_are_checked_and_named():
    import dagster as dg

    from twin_pipeline.defs.federated.assets import FederatedResource

    assert FederatedResource(outbox_dir="x", dp_epsilon=" ").dp_epsilon_value() is None
    assert FederatedResource(outbox_dir="x", dp_epsilon="0.5").dp_epsilon_value() == 0.5
    assert FederatedResource(outbox_dir="x").dp_total_budget_value() == 10.0
    for field, raw, message in [("dp_epsilon", "abc", "TWIN_DP_EPSILON='abc' is not a number"),
                                ("dp_epsilon", "-1", "TWIN_DP_EPSILON='-1' must be > 0"),
                                ("dp_total_budget", "0", "TWIN_DP_TOTAL_BUDGET='0' must be > 0"),
                                ("dp_total_budget", "", "TWIN_DP_TOTAL_BUDGET is empty")]:
        resource = FederatedResource(outbox_dir="x", **{field: raw})
        getter = resource.dp_epsilon_value if field == "dp_epsilon" else resource.dp_total_budget_value
        with pytest.raises(dg.Failure, match=message.replace("(", r"\(")):
            getter()
