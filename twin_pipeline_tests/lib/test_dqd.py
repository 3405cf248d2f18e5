"""DQD-style checks: planted unit errors flagged per row and per site, temporal and referential
plausibility, 4CE lab ranges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib import dqd
from twin_pipeline.lib import harmonize as hz
from twin_pipeline.sources.landing import SiteConfig
from twin_pipeline_tests.conftest import shared_data


@pytest.fixture(scope="module")
def vocab():
    return hz.load_vocabulary()


def _meas(vocab, rows, site=SiteConfig("hospital_a")):
    df = pd.DataFrame(rows, columns=["source_code", "value_source", "unit_source"])
    df["value_type"] = "numeric"
    df["person_id"] = [f"P{i:016x}" for i in range(len(df))]
    df["visit_id"] = None
    df["observation_datetime"] = pd.Timestamp("2026-01-01")
    df["site_id"], df["delivery_id"], df["source_file"], df["source_row"] = "s", "d", "observations.csv", range(len(df))
    meas, _, rej = hz.harmonize_measurements(df, vocab, local_lab_codes=site.local_lab_codes, unit_alias=site.unit_alias)
    assert rej.empty
    return meas


def test_planted_unit_error_rows_are_flagged_and_only_those(vocab):
    rng = np.random.default_rng(1)
    glucose = rng.normal(105, 25, 200).clip(60, 300)
    creat = rng.normal(0.95, 0.2, 200).clip(0.4, 3)
    rows = [["2345-7", f"{g:.0f}", "mg/dL"] for g in glucose] + [["2160-0", f"{c:.2f}", "mg/dL"] for c in creat]
    clean = _meas(vocab, rows)
    r = dqd.check_unit_error_suspect(clean, vocab)
    assert r.rows_violated == 0 and r.passed
    # plant: 7 glucose values sent in mmol/L and 4 creatinine values in umol/L, both under the mg/dL label
    planted = list(rows)
    for i in range(0, 70, 10):
        planted[i] = ["2345-7", f"{glucose[i] / 18.016:.1f}", "mg/dL"]
    for i in range(200, 240, 10):
        planted[i] = ["2160-0", f"{creat[i - 200] / 0.011312:.0f}", "mg/dL"]
    bad = _meas(vocab, planted)
    r = dqd.check_unit_error_suspect(bad, vocab)
    assert r.breakdown == {"2345-7": 7, "2160-0": 4} and not r.passed
    flagged = dqd.unit_error_rows(bad, vocab)
    assert sorted(bad.index[flagged]) == [*range(0, 70, 10), *range(200, 240, 10)]
    assert r.metadata("hospital_a")["rows_violated"] == 11 and "site_id" in r.metadata("hospital_a")


def test_whole_site_in_the_wrong_unit_is_flagged_at_site_level(vocab):
    rng = np.random.default_rng(2)
    kg = rng.normal(78, 14, 60).clip(45, 140)
    ok = _meas(vocab, [["29463-7", f"{w:.1f}", "kg"] for w in kg])
    assert dqd.site_unit_shifts(ok, vocab) == {}
    # pounds written under the kg label: every value plausible on its own, the site median is not
    lbs = _meas(vocab, [["29463-7", f"{w / 0.45359237:.1f}", "kg"] for w in kg])
    assert dqd.check_unit_error_suspect(lbs, vocab).rows_violated == 0
    shifts = dqd.site_unit_shifts(lbs, vocab)
    assert shifts == {"29463-7": pytest.approx(0.45359237)}
    assert not dqd.check_site_unit_shift(lbs, vocab).passed


def _tables():
    t = pd.Timestamp
    person = pd.DataFrame({"person_id": ["P1", "P2"], "birth_date": [t("1990-05-01"), t("1950-01-01")],
                           "death_date": [pd.NaT, t("2020-03-01")]})
    visit = pd.DataFrame({"visit_id": ["E1", "E2", "E3", "E4"], "person_id": ["P1", "P1", "P2", "PX"],
                          "visit_start_datetime": [t("1989-12-31"), t("2020-01-01 10:00"), t("2020-03-01 15:00"),
                                                   t("2020-01-01")],
                          "visit_end_datetime": [t("1990-01-01"), t("2020-01-01 09:00"), t("2020-03-02"),
                                                 t("2020-01-02")]})
    cond = pd.DataFrame({"person_id": ["P2"], "visit_id": ["E9"], "condition_start_datetime": [t("2019-01-01")],
                         "condition_end_datetime": [t("2018-12-01")], "condition_concept_code": ["E11.9"]})
    empty = {k: pd.DataFrame({"person_id": pd.Series(dtype=object)}) for k in ("drug_exposure", "procedure_occurrence", "observation")}
    meas = pd.DataFrame({"person_id": ["P1"], "visit_id": ["E2"], "measurement_datetime": [t("2020-01-01")],
                         "measurement_concept_code": ["2345-7"], "value_as_number": [99.0], "unit_concept_code": ["mg/dL"]})
    return {"person": person, "visit_occurrence": visit, "condition_occurrence": cond, "measurement": meas, **empty}


def test_temporal_referential_and_duration_checks(vocab):
    t = _tables()
    fk = dqd.check_person_fk(t)
    assert (fk.rows_violated, fk.breakdown, fk.passed) == (1, {"visit_occurrence": 1}, False)
    before = dqd.check_event_vs_life(t, "birth")
    assert before.breakdown == {"visit_occurrence": 1}  # E1 starts the day before P1's birth
    after = dqd.check_event_vs_life(t, "death")
    assert after.breakdown == {"visit_occurrence": 1}  # E3 ends the day after P2's death (same day is fine)
    neg = dqd.check_negative_duration(t)
    assert neg.breakdown == {"visit_occurrence": 1, "condition_occurrence": 1}
    link = dqd.check_event_visit_link(t)
    assert (link.rows_checked, link.rows_violated) == (2, 1)
    results = dqd.run_checks(t, vocab)
    assert len(results) == len(dqd.CHECKS) == 12
    s = dqd.summary(results)
    assert sum(v["checks"] for v in s.values()) == 12 and s["conformance"]["failed"] >= 1
    assert {r.check.name for r in results if r.check.blocking} == {"person_fk", "canonical_unit"}


def test_fource_lab_ranges_envelope_and_site_check():
    ranges = dqd.load_fource_ranges(shared_data("federated", "4ce", "lab.range.converted.csv"))
    assert {"2160-0", "1988-5", "48065-7", "6690-2"} <= set(ranges.index) and len(ranges) == 18
    assert (ranges["ln_low"] < ranges["ln_high"]).all()
    lo, hi = np.exp(ranges.loc["2160-0", ["ln_low", "ln_high"]])
    meas = pd.DataFrame({"measurement_concept_code": ["2160-0"] * 3, "value_as_number": [np.sqrt(lo * hi)] * 3})
    assert dqd.check_fource_site_range(meas, ranges).rows_violated == 0
    meas["value_as_number"] = np.sqrt(lo * hi) / 0.011312  # a site sending creatinine in umol/L
    r = dqd.check_fource_site_range(meas, ranges)
    assert r.breakdown == {"2160-0": 3}
    assert dqd.check_fource_site_range(meas, None).note.startswith("4CE lab range file not configured")
