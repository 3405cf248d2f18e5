"""Canary test: unique identifiers planted in every PHI-bearing field of every source of a delivery
never appear downstream of `deid` after a full materialization (deid → omop → features → twin → ml),
and the leak scanner catches a leak planted on purpose.

Every alphabetic canary carries the marker "cnry", every numeric canary a fixed prefix, so the
assertions search for them independently of the scanner (plain substring search).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import pandas as pd
import pytest
import wfdb

from twin_pipeline.defs.build import all_assets
from twin_pipeline.lib import deid_tables, kanon
from twin_pipeline.lib.deid import DeidKey, pseudonym
from twin_pipeline.sources.landing import find_deliveries
from twin_pipeline_tests.conftest import TEST_SECRET, make_resources, materialize_site_deliveries

pytestmark = pytest.mark.slow

MARKER = "cnry"
LEAK_KEY = dg.AssetKey(["privacy", "leak_scan"])
KANON_KEY = dg.AssetKey(["privacy", "twin_k_anonymity"])


def _code(i: int) -> str:
    s = ""
    i += 26
    while i:
        i, r = divmod(i, 26)
        s = "abcdefghijklmnopqrstuvwxyz"[r] + s
    return s


def _canaries(site_index: int, i: int) -> dict[str, str]:
    c = _code(i)
    phone_digits = f"55590{site_index}{i:04d}"
    ssn_digits = f"98{site_index}{i:06d}"
    return {
        "FIRST": f"Cnryf{c}{100 + i}", "first_plain": f"Cnryf{c}", "LAST": f"Cnryl{c}", "MAIDEN": f"Cnrym{c}",
        "ADDRESS": f"{10 + i} Cnrya{c} Street", "CITY": f"Cnryc{c}ville", "COUNTY": f"Cnryk{c} County",
        "BIRTHPLACE": f"Cnryb{c}  Texas  US",
        "SSN": f"{ssn_digits[:3]}-{ssn_digits[3:5]}-{ssn_digits[5:]}", "ssn_digits": ssn_digits,
        "PHONE": f"({phone_digits[:3]}) {phone_digits[3:6]}-{phone_digits[6:]}", "phone_digits": phone_digits,
        "DRIVERS": f"S98{site_index}{i:06d}", "PASSPORT": f"X97{site_index}{i:06d}X",
    }


def _rw_csv(path: Path):
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def _write_csv(path: Path, fields, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _sub_word(text: str, old: str, new: str) -> str:
    return re.sub(rf"(?i)\b{re.escape(old)}\b", new, text) if old else text


def plant_canaries(landing: Path) -> dict[str, set[str]]:
    """Replace / add identifiers in every source of every delivery; return the digit canaries."""
    digit_canaries: set[str] = set()
    for site_index, site_dir in enumerate(sorted(p for p in landing.iterdir() if p.is_dir())):
        deliveries = sorted(p for p in site_dir.iterdir() if p.is_dir())
        ids = sorted({r["Id"] for d in deliveries for r in _rw_csv(d / "ehr" / "patients.csv")[1]})
        index = {pid: i for i, pid in enumerate(ids)}
        for d in deliveries:
            fields, patients = _rw_csv(d / "ehr" / "patients.csv")
            old: dict[str, dict] = {}
            for r in patients:
                can = _canaries(site_index, index[r["Id"]])
                old[r["Id"]] = {"FIRST": r["FIRST"], "LAST": r["LAST"], "PHONE": r["PHONE"], "MRN": r["MRN"],
                                "BIRTHDATE": r["BIRTHDATE"], "can": can}
                for col in ("FIRST", "LAST", "ADDRESS", "CITY", "COUNTY", "BIRTHPLACE", "SSN", "PHONE",
                            "DRIVERS", "PASSPORT"):
                    r[col] = can[col]
                if r["MAIDEN"]:
                    r["MAIDEN"] = can["MAIDEN"]
                digit_canaries |= {can["ssn_digits"], can["phone_digits"]}
            _write_csv(d / "ehr" / "patients.csv", fields, patients)

            def who(pid: str) -> str:
                can = old[pid]["can"]
                return f" for {can['first_plain']} {can['LAST']} MRN {old[pid]['MRN']} tel {can['PHONE']}"

            for table in ("encounters", "conditions", "observations", "medications", "procedures"):
                fields, rows = _rw_csv(d / "ehr" / f"{table}.csv")
                seen: set[str] = set()
                pcol = "PATIENT"
                for r in rows:
                    pid = r[pcol]
                    if pid in old and pid not in seen:  # one text-bearing row per patient and table
                        seen.add(pid)
                        r["DESCRIPTION"] = r["DESCRIPTION"] + who(pid)
                        if "REASONDESCRIPTION" in r and r["REASONDESCRIPTION"]:
                            r["REASONDESCRIPTION"] = r["REASONDESCRIPTION"] + who(pid)
                _write_csv(d / "ehr" / f"{table}.csv", fields, rows)

            fields, records = _rw_csv(d / "interviews" / "records.csv")
            for r in records:
                o = old[r["patient_id"]]
                can = o["can"]
                note = r["notes"]
                for key, new in (("FIRST", can["first_plain"]), ("LAST", can["LAST"])):
                    note = _sub_word(note, o[key], new)
                note = note.replace(o["PHONE"], can["PHONE"])
                r["notes"] = (note + f" Called {can['first_plain']} {can['LAST']} at {can['PHONE']}; "
                              f"SSN {can['SSN']}; lives at {can['ADDRESS']}, {can['CITY']}.")
                r["full_name"] = f"{can['first_plain']} {can['LAST']}"
                r["phone"] = can["PHONE"]
            _write_csv(d / "interviews" / "records.csv", fields, records)

            wdir = d / "waveforms"
            fields, manifest = _rw_csv(wdir / "manifest.csv")
            for j, r in enumerate(manifest):
                o = old[r["patient_id"]]
                can = o["can"]
                rec = wfdb.rdrecord(str(wdir / r["record"]), physical=False)
                new_name = f"{r['record']}_{MARKER}r{_code(j)}"
                rec.record_name = new_name
                rec.file_name = [f"{new_name}.dat"] * rec.n_sig
                rec.comments = [f"patient: {can['first_plain']} {can['LAST']} mrn: {o['MRN']} dob: {o['BIRTHDATE']}",
                                f"recorded by {can['first_plain']} {can['LAST']} at {can['ADDRESS']}"]
                rec.wrsamp(write_dir=str(wdir))
                for suffix in (".hea", ".dat"):
                    (wdir / f"{r['record']}{suffix}").unlink()
                r["record"] = new_name
                r["device_serial"] = f"CNRYD{site_index}{j:04d}"
            _write_csv(wdir / "manifest.csv", fields, manifest)
    return {"digits": digit_canaries}


def _materialize_all(paths: dict, work: Path, instance: dg.DagsterInstance) -> dict:
    resources = make_resources(paths, work)
    materialize_site_deliveries(paths["landing"], resources, instance)
    res = dg.materialize(all_assets(), selection=dg.AssetSelection.groups("twin", "ml"), resources=resources,
                         instance=instance)
    assert res.success
    return resources


def _privacy(resources: dict, instance) -> dg.ExecuteInMemoryResult:
    return dg.materialize(all_assets(), selection=dg.AssetSelection.groups("privacy"), resources=resources,
                          instance=instance, raise_on_error=False)


def _check(result, key: dg.AssetKey):
    [ev] = [e for e in result.get_asset_check_evaluations() if e.asset_key == key]
    return ev


def _mat_meta(result, key: dg.AssetKey) -> dict:
    [m] = [m for m in result.get_asset_materialization_events() if m.asset_key == key]
    return {k: getattr(v, "value", v) for k, v in m.materialization.metadata.items()}


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory):
    from twin_pipeline.synth.generator import generate_cohort

    root = tmp_path_factory.mktemp("canary")
    paths = {"landing": root / "landing", "truth": root / "truth", "sites": root / "sites", "root": root}
    generate_cohort(paths["landing"], sites=2, patients=70, seed=11, truth_dir=paths["truth"],
                    sites_dir=paths["sites"], deliveries=1,
                    waveform_seconds={"ecg_monitor": 12, "ventilator": 20, "wearable": 30})
    planted = plant_canaries(paths["landing"])
    work = root / "work"
    work.mkdir()
    instance = dg.DagsterInstance.ephemeral()
    resources = _materialize_all(paths, work, instance)
    result = _privacy(resources, instance)
    return {"paths": paths, "work": work, "instance": instance, "resources": resources, "result": result,
            "digits": planted["digits"]}


_NUMBER_RE = re.compile(r"\(?\d[\d ().-]{7,16}\d")  # a formatted number: digits with -, ., space, ( )


def _texts_with(haystacks, needles_lower: set[str], digits: set[str]) -> int:
    """How many texts hold a canary (marker substring, or a digit canary in a formatted number)."""
    n = 0
    for text in haystacks:
        low = text.lower()
        numbers = {re.sub(r"\D", "", m.group()) for m in _NUMBER_RE.finditer(text)
                   if not re.fullmatch(r"\d+\.\d+", m.group())}  # not a decimal number
        n += any(x in low for x in needles_lower) or any(d in num for num in numbers for d in digits)
    return n


def _warehouse_texts(db: Path):
    con = duckdb.connect(str(db), read_only=True)
    try:
        cols = con.execute("select table_schema, table_name, column_name, data_type "
                           "from information_schema.columns").fetchall()
        for s, t, c, dtype in cols:
            if dtype.upper() not in ("VARCHAR", "JSON") and not dtype.upper().startswith(("STRUCT", "MAP")) \
                    and not dtype.endswith("[]"):
                continue
            yield f"{s}.{t}.{c}"
            for (v,) in con.execute(f'select distinct cast("{c}" as varchar) from "{s}"."{t}" where "{c}" is not null').fetchall():
                yield v
    finally:
        con.close()


def _file_texts(root: Path):
    for p in sorted(root.rglob("*")):
        yield str(p.relative_to(root))
        if p.is_file():
            yield p.read_bytes().decode("utf-8", errors="replace")


def test_canaries_reached_the_landing_area(canary_run):
    landing = canary_run["paths"]["landing"]
    texts = list(_file_texts(landing))
    assert _texts_with(texts, {MARKER}, set()) > 100
    assert _texts_with(texts, set(), canary_run["digits"]) >= 5


def test_no_canary_anywhere_downstream(canary_run):
    work = canary_run["work"]
    digits = canary_run["digits"]
    wh = list(_warehouse_texts(work / "warehouse.duckdb"))
    assert len(wh) > 1000
    assert _texts_with(wh, {MARKER}, digits) == 0
    store = list(_file_texts(work / "waveforms"))
    assert any(name.endswith(".hea") for name in store)
    assert _texts_with(store, {MARKER}, digits) == 0
    ml_files = list(_file_texts(work / "mlartifacts")) + [(work / "mlflow.db").read_bytes().decode("latin-1")]
    assert _texts_with(ml_files, {MARKER}, digits) == 0
    instance = canary_run["instance"]
    events = [dg.serialize_value(e) for r in instance.get_runs() for e in instance.all_logs(r.run_id)]
    assert len(events) > 100
    assert _texts_with(events, {MARKER}, digits) == 0
    # the scanner agrees: it collected the canaries and found none of them downstream
    result = canary_run["result"]
    meta = _mat_meta(result, LEAK_KEY)
    assert meta["hits_total"] == 0, meta["hits_by_area"]
    assert meta["identifiers_collected"]["name"] > 100 and meta["identifiers_collected"]["record_name"] > 10
    assert meta["scanned"]["tables"] > 10 and meta["scanned"]["events"] > 100 and meta["scanned"]["files"] > 10
    assert _check(result, LEAK_KEY).passed


def test_deid_outputs_still_carry_the_scrubbed_text(canary_run):
    """The canaries were removed, not the rows: descriptions and notes survive with tags."""
    con = duckdb.connect(str(canary_run["work"] / "warehouse.duckdb"), read_only=True)
    n_tagged = con.execute("select count(*) from deid.visit where description like '%[NAME]%'").fetchone()[0]
    n_notes = con.execute("select count(*) from deid.interview where notes like '%[PHONE]%'").fetchone()[0]
    con.close()
    assert n_tagged > 10 and n_notes > 10


def test_crosswalk_stays_in_the_site_landing_area_and_reidentifies(canary_run):
    landing = canary_run["paths"]["landing"]
    key = DeidKey.from_secret(TEST_SECRET, max_shift_days=120)
    con = duckdb.connect(str(canary_run["work"] / "warehouse.duckdb"), read_only=True)
    persons = con.execute("select distinct site_id, person_id from deid.person").fetchall()
    records = con.execute("select distinct site_id, record_id from deid.waveform_record").fetchall()
    con.close()
    for site_dir in sorted(p for p in landing.iterdir() if p.is_dir()):
        xw = deid_tables.read_crosswalks(site_dir)
        files = sorted(p.name for p in (site_dir / "_crosswalk").iterdir())
        assert files and all(f.startswith("2026-") for f in files)
        back = dict(zip(xw["pseudonym"], xw["local_id"], strict=True))
        site_persons = [p for s, p in persons if s == site_dir.name]
        assert site_persons and all(p in back for p in site_persons)
        for p in site_persons[:20]:
            assert pseudonym(key, site_dir.name, back[p], "person") == p
        site_records = [r for s, r in records if s == site_dir.name]
        assert site_records and all(MARKER in back[r] for r in site_records)  # raw record names, at the site
    # crosswalk folders are not deliveries
    assert all(d.delivery_id.startswith("2026-") for d in find_deliveries(landing))


def test_k_anonymity_report_matches_the_twins(canary_run):
    result = canary_run["result"]
    meta = _mat_meta(result, KANON_KEY)
    con = duckdb.connect(str(canary_run["work"] / "warehouse.duckdb"), read_only=True)
    twins = con.execute("select * from twin.patient_twin").df()
    con.close()
    rep = kanon.k_anonymity(kanon.twin_quasi_identifiers(twins), kanon.TWIN_QUASI_IDENTIFIERS, k=5)
    assert meta["records"] == len(twins) == rep.records
    assert meta["smallest_class"] == rep.smallest_class and meta["records_below_k"] == rep.records_below_k
    ev = _check(result, KANON_KEY)
    assert ev.passed == (rep.records_below_k == 0)
    if not ev.passed:
        assert ev.severity == dg.AssetCheckSeverity.WARN


def test_scanner_catches_planted_leaks(canary_run):
    """Write a canary into a warehouse table, an MLflow tag and a waveform header: the gate fails and
    reports areas and kinds, never the values."""
    work = canary_run["work"]
    landing = canary_run["paths"]["landing"]
    pat = pd.read_csv(sorted(landing.glob("*/*/ehr/patients.csv"))[0], dtype=str).iloc[0]
    con = duckdb.connect(str(work / "warehouse.duckdb"))
    con.execute("create table omop.leak_probe as select ? as note, ? as other", [f"called {pat['LAST']}", "fine"])
    con.close()
    client = mlflow.MlflowClient(tracking_uri=canary_run["resources"]["mlflow"].tracking_uri)
    exp = client.get_experiment_by_name(canary_run["resources"]["mlflow"].experiment_name)
    run = client.search_runs([exp.experiment_id])[0]
    client.set_tag(run.info.run_id, "probe", f"ssn {pat['SSN'].replace('-', ' ')}")
    hea = sorted((work / "waveforms").rglob("*.hea"))[0]
    hea.write_text(hea.read_text() + f"# ssn {pat['SSN']}\n")
    try:
        result = _privacy(canary_run["resources"], canary_run["instance"])
        ev = _check(result, LEAK_KEY)
        assert not ev.passed
        meta = _mat_meta(result, LEAK_KEY)
        assert meta["hits_by_area"].keys() >= {"warehouse", "mlflow", "waveform_store"}
        assert meta["hits_by_kind"].get("name", 0) >= 1 and meta["hits_by_kind"].get("ssn_digits", 0) >= 2
        locs = {(x["area"], x["location"]) for x in meta["hit_locations"]}
        assert ("warehouse", "omop.leak_probe.note") in locs and ("mlflow", "run.tag:probe") in locs
        assert ("warehouse", "omop.leak_probe.other") not in locs
        serialized = dg.serialize_value(result.get_asset_materialization_events()[0]) + str(ev.metadata)
        assert pat["LAST"].lower() not in serialized.lower()
        assert re.sub(r"\D", "", pat["SSN"]) not in re.sub(r"\D", "", serialized)
    finally:
        con = duckdb.connect(str(work / "warehouse.duckdb"))
        con.execute("drop table omop.leak_probe")
        con.close()
        client.delete_tag(run.info.run_id, "probe")
        hea.write_text("".join(line + "\n" for line in hea.read_text().splitlines() if "ssn" not in line))
