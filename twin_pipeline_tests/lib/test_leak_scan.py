"""Leak scanner: identifier collection, exact and normalized matching, every area, real Synthea data."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import duckdb
import pytest
import wfdb

from twin_pipeline.lib import deid_tables, leak_scan
from twin_pipeline.lib.deid import DeidKey, date_shift_days, deidentify_wfdb_comments, load_restricted_zip3
from twin_pipeline.lib.harmonize import default_vocab_dir
from twin_pipeline.sources.landing import Quarantine, SiteConfig
from twin_pipeline.sources.synthea_csv import EHR_TABLES, read_ehr
from twin_pipeline.sources.wfdb_io import read_record, write_record
from twin_pipeline_tests.conftest import TEST_SECRET, shared_data


@pytest.fixture()
def ids() -> leak_scan.IdentifierSet:
    s = leak_scan.IdentifierSet()
    for value, kind in [("Jorge Luis88", "name"), ("Vela532", "name"), ("999-75-6624", "ssn"),
                        ("(752) 800-1722x4644", "phone"), ("13195508", "mrn"), ("568 Hills Branch Unit 86", "address"),
                        ("ecg_13195508_20260724", "record_name"), ("WR-911236", "device_serial"),
                        ("Will", "name"), ("1976-02-16", "birth_date")]:
        s.add(value, kind)
    s.add_full_name("Will", "Young")
    return s


def test_identifier_set_never_shows_values(ids):
    assert "Vela" not in repr(ids) and "6624" not in str(ids)
    assert ids.counts["name"] == 3 and ids.counts["ssn"] == 1


@pytest.mark.parametrize("text,kind", [
    ("seen by JORGE today", "name"),                 # case-folded
    ("patient vela, 12 y", "name"),                  # Synthea trailing digits stripped
    ("Vela532 again", "name"),                       # exact form
    ("ssn 999 75 6624", "ssn_digits"),               # digits whatever the separators
    ("SSN: 999756624", "ssn_digits"),
    ("call 752.800.1722", "phone_digits"),
    ("+1 (752) 800 1722 ext 12", "phone_digits"),
    ("mrn#13195508", "mrn_digits"),
    ("lives at 568 hills branch unit 86", "address"),
    ("file ECG_13195508_20260724.hea", "record_name"),
    ("device wr-911236", "device_serial"),
    ("Will Young called", "name"),                   # common-word names only as the full name
    ("born 19760216", "birth_date"),
])
def test_hits_exact_and_normalized_forms(ids, text, kind):
    assert ids.hits(text)[kind] >= 1


@pytest.mark.parametrize("text", [
    "Will follow up in 2 weeks",                     # a first name that is a common word, alone
    "Velázquez sign", "Jorgensen", "1999756624577", "timestamp 20260724123456",
    "value 113195508", "0.99975662", "Branch office", "P3f9a1c0d2e4b5a67",
])
def test_no_hit_on_lookalikes(ids, text):
    assert ids.hits(text) == Counter()


def test_scan_files_redacts_identifier_path_components_and_skips_short_binary_tokens(tmp_path, ids):
    (tmp_path / "site" / "ecg_13195508_20260724").mkdir(parents=True)
    (tmp_path / "site" / "ecg_13195508_20260724" / "x.hea").write_text("R1 2 250 100\n# seen by Jorge\n")
    (tmp_path / "site" / "ok.dat").write_bytes(b"\x00\x01vela\x00" * 3)
    rep = leak_scan.scan_files(tmp_path, ids, area="store")
    locs = {(r["location"], r["kind"]): r["hits"] for r in rep.locations()}
    # the record name (holding the MRN) in the folder name, the first name in the header comment
    assert locs == {("site/[REDACTED]/x.hea", "record_name"): 1, ("site/[REDACTED]/x.hea", "mrn"): 1,
                    ("site/[REDACTED]/x.hea", "mrn_digits"): 1, ("site/[REDACTED]/x.hea", "name"): 1}
    assert rep.scanned["files"] == 2


def test_scan_warehouse_counts_rows_per_column_without_values(tmp_path, ids):
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema omop")
    con.execute("create table omop.t as select * from (values ('called jorge', 999756624::bigint, 1.5),"
                "('called jorge', 5, 2.5), ('fine', 7, 3.5)) v(note, n, x)")
    con.close()
    rep = leak_scan.scan_warehouse(db, ids)
    assert rep.hits == Counter({("warehouse", "omop.t.note", "name"): 2, ("warehouse", "omop.t.n", "ssn_digits"): 1})
    assert rep.by_area() == {"warehouse": 3}


def _synthea_delivery(tmp_path: Path) -> Path:
    csv_dir = shared_data("ehr", "synthea_59", "csv")
    delivery = tmp_path / "landing" / "synthea_ca" / "2022-03-04"
    delivery.mkdir(parents=True)
    (delivery / "ehr").symlink_to(csv_dir, target_is_directory=True)
    return delivery


def test_real_synthea_export_deidentified_has_zero_hits(tmp_path):
    """The Synthea sample (names, SSNs, licences, passports, addresses incl. SDOH "What address do you
    live at?" answers, lat/lon, exact dates) as a site delivery: raw it is full of hits, de-identified none."""
    delivery = _synthea_delivery(tmp_path)
    ids = leak_scan.collect_identifiers([delivery])
    assert ids.counts["ssn"] == 59 and ids.counts["passport"] > 30 and ids.counts["geo"] == 118
    q = Quarantine(tmp_path / "q", "synthea_ca", "2022-03-04")
    load = read_ehr(delivery, SiteConfig("synthea_ca"), "2022-03-04", q)
    frames = deid_tables.deidentify_ehr(
        {t: load.tables[t].frame for t in EHR_TABLES}, key=DeidKey.from_secret(TEST_SECRET),
        site_id="synthea_ca", delivery_id="2022-03-04",
        restricted_zip3=load_restricted_zip3(default_vocab_dir() / "restricted_zip3.csv"))
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create schema deid; create schema raw")
    for name, df in frames.items():
        con.register("df", df)
        con.execute(f"create table deid.{name} as select * from df")
        con.unregister("df")
    raw_obs = load.tables["observations"].frame[["VALUE", "DESCRIPTION"]].astype(str)
    con.register("raw_obs", raw_obs)
    con.execute("create table raw.observations as select * from raw_obs")
    con.close()
    rep = leak_scan.scan_warehouse(db, ids)
    deid_hits = {k: n for k, n in rep.hits.items() if k[1].startswith("deid.")}
    assert deid_hits == {}
    raw = {k: n for k, n in rep.hits.items() if k[1].startswith("raw.")}
    assert raw.get(("warehouse", "raw.observations.VALUE", "address"), 0) >= 300  # the scanner sees the SDOH addresses
    assert len(frames["person"]) == 59 and frames["observation"]["value_source"].notna().sum() > 20000


def test_real_bedside_wfdb_headers_are_deidentified(tmp_path):
    """Real PhysioNet headers: renamed, base date shifted by the patient's shift, comments scrubbed."""
    bedside = shared_data("bedside")
    key = DeidKey.from_secret(TEST_SECRET, max_shift_days=90)
    written = 0
    for hea in sorted(bedside.glob("*.hea")):
        rec = read_record(hea)
        fake_pid = f"patient-{hea.stem}"
        shift = date_shift_days(key, "bedside", fake_pid)
        base = rec.base_datetime + dt.timedelta(days=shift) if rec.base_datetime else None
        comments = list(rec.comments) + ["patient: Maude Wunsch mrn: 4455667 dob: 1950-01-02"]
        new_name = deid_tables.record_pseudonyms(key, "bedside", [hea.stem])[hea.stem]
        out = write_record(rec, tmp_path, record_name=new_name, base_datetime=base,
                           comments=deidentify_wfdb_comments(comments, ["Maude", "Wunsch", "4455667", hea.stem]))
        header = wfdb.rdheader(str(out.with_suffix("")))
        text = out.read_text()
        assert hea.stem not in text and "Wunsch" not in text and "4455667" not in text and "1950" not in text
        assert header.record_name == new_name
        if rec.base_datetime is not None:
            got = dt.datetime.combine(header.base_date, header.base_time)
            assert (got - rec.base_datetime).days == shift != 0
        # clinical comments without identifiers survive ("Asystole", "False alarm")
        assert [c for c in header.comments] == [c.strip() for c in rec.comments if c.strip()]
        written += 1
    ids = leak_scan.IdentifierSet()
    for hea in bedside.glob("*.hea"):
        ids.add(hea.stem, "record_name")
    ids.add("Maude Wunsch", "name")
    assert written >= 4 and leak_scan.scan_files(tmp_path, ids, area="store").total == 0
