"""Landing readers: row-exact CSV parsing, site date formats, quarantine accounting, real Synthea."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from twin_pipeline.sources.landing import (
    LandingError,
    Quarantine,
    SiteConfig,
    find_deliveries,
    load_site_config,
)
from twin_pipeline.sources.redcap import read_interviews
from twin_pipeline.sources.synthea_csv import read_ehr, read_ehr_table
from twin_pipeline_tests.conftest import shared_data

CONDITIONS_HEADER = "START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION\n"


def _q(tmp_path: Path) -> Quarantine:
    return Quarantine(tmp_path / "q", "site_x", "2026-10-01")


def test_malformed_lines_are_quarantined_with_their_line_numbers(tmp_path):
    p = tmp_path / "conditions.csv"
    p.write_text(
        CONDITIONS_HEADER
        + "2024-01-02,,p1,e1,69896004,Rheumatoid arthritis\n"
        + "2024-01-03,,p2,e2,69896004\n"  # one field short
        + "not-a-date,,p3,e3,44054006,Diabetes\n"
        + "2024-01-05,,,e4,44054006,Diabetes\n"  # no patient
        + "2024-01-06,,p5,e5,44054006,Diabetes\n"
    )
    q = _q(tmp_path)
    load = read_ehr_table(p, "conditions", SiteConfig("site_x"), "2026-10-01", q)
    assert load.received == 5
    assert load.loaded == 2
    assert load.quarantined == 3
    assert load.received == load.loaded + load.quarantined
    assert list(load.frame["_source_row"]) == [2, 6]
    assert pd.api.types.is_datetime64_any_dtype(load.frame["START"])
    reasons = q.reasons("ehr_conditions")
    assert reasons == {"wrong field count": 1, "unparseable date": 1, "missing value": 1}
    out = q.write()
    written = pd.read_csv(out / "ehr_conditions.csv")
    assert len(written) == 3
    assert written["_reason"].str.contains("site_x/2026-10-01/conditions.csv").all()


def test_site_date_format_is_used_and_a_foreign_format_is_rejected(tmp_path):
    p = tmp_path / "conditions.csv"
    p.write_text(CONDITIONS_HEADER + "31/01/2024,,p1,e1,1,x\n" + "01/31/2024,,p2,e2,1,x\n")
    site = SiteConfig("site_b", date_format="%d/%m/%Y", datetime_format="%d/%m/%Y %H:%M")
    load = read_ehr_table(p, "conditions", site, "2026-10-01", _q(tmp_path))
    assert load.loaded == 1
    assert load.frame["START"].iloc[0] == pd.Timestamp("2024-01-31")


def test_missing_required_column_quarantines_the_whole_file(tmp_path):
    p = tmp_path / "conditions.csv"
    p.write_text("START,PATIENT\n2024-01-01,p1\n2024-01-02,p2\n")
    q = _q(tmp_path)
    load = read_ehr_table(p, "conditions", SiteConfig("site_x"), "2026-10-01", q)
    assert (load.received, load.loaded, load.quarantined) == (2, 0, 2)
    assert "missing columns" in next(iter(q.reasons("ehr_conditions")))


def test_find_deliveries_skips_half_copied_and_badly_named(tmp_path):
    for site, delivery, ready in [("site_a", "2026-10-01", True), ("site_a", "2026-11-01", False),
                                  ("Bad Site", "2026-10-01", True), ("site_b", "latest", True)]:
        d = tmp_path / site / delivery
        d.mkdir(parents=True)
        if ready:
            (d / "_READY").touch()
    found = [(d.site_id, d.delivery_id) for d in find_deliveries(tmp_path)]
    assert found == [("site_a", "2026-10-01")]


def test_site_config_rejects_unknown_keys_and_mismatched_ids(tmp_path):
    (tmp_path / "site_a.yaml").write_text("site_id: site_a\ndate_fromat: '%d/%m/%Y'\n")
    with pytest.raises(LandingError, match="unknown keys"):
        load_site_config(tmp_path, "site_a")
    (tmp_path / "site_b.yaml").write_text("site_id: site_c\n")
    with pytest.raises(LandingError, match="expected 'site_b'"):
        load_site_config(tmp_path, "site_b")
    assert load_site_config(tmp_path, "site_z").date_format == "%Y-%m-%d"


def test_unit_alias_prefers_concept_specific_spelling():
    site = SiteConfig("s", unit_aliases={"*": {"mmol/l": "mmol/L"}, "2160-0": {"mmol/l": "umol/L"}})
    assert site.unit_alias("2345-7", "mmol/l") == "mmol/L"
    assert site.unit_alias("2160-0", "mmol/l") == "umol/L"
    assert site.unit_alias("2345-7", "mg/dL") == "mg/dL"


def test_redcap_values_outside_the_dictionary_domain_are_quarantined(tmp_path):
    idir = tmp_path / "interviews"
    idir.mkdir()
    from twin_pipeline.sources.redcap import DICTIONARY_COLUMNS

    rows = [
        ["record_id", "interview", "", "text", "Record", "", "", "", "", "", "", "", "", "", "", "", "", ""],
        ["patient_id", "interview", "", "text", "Patient", "", "", "", "", "", "y", "", "", "", "", "", "", ""],
        ["interview_date", "interview", "", "text", "Date", "", "", "date_ymd", "", "", "", "", "", "", "", "", "", ""],
        ["fatigue_score", "interview", "", "slider", "Fatigue", "None | | Worst", "", "", "0", "10", "", "", "", "",
         "", "", "", ""],
        ["joint_pain", "interview", "", "yesno", "Joint pain", "", "", "", "", "", "", "", "", "", "", "", "", ""],
    ]
    pd.DataFrame(rows, columns=DICTIONARY_COLUMNS).to_csv(idir / "data_dictionary.csv", index=False)
    (idir / "records.csv").write_text(textwrap.dedent("""\
        record_id,patient_id,interview_date,fatigue_score,joint_pain
        1,p1,2026-01-02,3,1
        2,p2,2026-01-03,11,0
        3,p3,2026-01-04,4,2
        4,p4,2026-01-05,five,0
        5,p5,2026-01-06,,
        """))
    q = _q(tmp_path)
    load = read_interviews(tmp_path, SiteConfig("site_x"), "2026-10-01", q)
    assert (load.received, load.loaded, load.quarantined) == (5, 2, 3)
    assert load.fields["patient_id"].identifier
    assert list(load.frame["record_id"]) == ["1", "5"]
    assert q.reasons("interviews_records") == {"value outside declared domain": 3}


def test_real_synthea_export_reads_with_every_row_accounted_for(tmp_path):
    csv_dir = shared_data("ehr", "synthea_59", "csv")
    delivery = tmp_path / "delivery"
    delivery.mkdir()
    (delivery / "ehr").symlink_to(csv_dir, target_is_directory=True)
    q = _q(tmp_path)
    load = read_ehr(delivery, SiteConfig("synthea_ca"), "2022-03-04", q)
    counts = load.counts()
    assert counts["patients"]["received"] == 59
    assert counts["observations"]["received"] == 21697
    for table, c in counts.items():
        assert c["received"] == c["loaded"] + c["quarantined"], table
    assert counts["patients"]["quarantined"] == 0
    assert load.tables["observations"].frame["DATE"].notna().all()
