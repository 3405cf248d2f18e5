"""FHIR R4 input: Bundles and bulk NDJSON read into the Synthea CSV frames; the patient present in the
real Synthea CSV and FHIR exports harmonizes to the same `omop` rows from both."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from twin_pipeline.lib import deid, deid_tables
from twin_pipeline.lib import harmonize as hz
from twin_pipeline.sources.landing import Quarantine, SiteConfig
from twin_pipeline.sources.synthea_csv import read_ehr
from twin_pipeline_tests.conftest import TEST_SECRET, shared_data

SITE, DELIVERY = "synthea", "2022-03-04"


def _bundle() -> Path:
    return next(shared_data("ehr", "synthea_59", "fhir").glob("*.json"))


def _delivery(tmp_path: Path, name: str, files: dict[str, Path]) -> Path:
    d = tmp_path / name
    (d / "ehr").mkdir(parents=True)
    for target, src in files.items():
        os.symlink(src, d / "ehr" / target)
    return d


def _read(d: Path, tmp_path: Path):
    q = Quarantine(tmp_path / "q", SITE, DELIVERY)
    return read_ehr(d, SiteConfig(SITE), DELIVERY, q), q


def _omop(load) -> hz.HarmonizedDelivery:
    key = deid.DeidKey.from_secret(TEST_SECRET, max_shift_days=120)
    frames = deid_tables.deidentify_ehr({t: load.tables[t].frame for t in load.tables}, key=key, site_id=SITE,
                                        delivery_id=DELIVERY, restricted_zip3=set())
    return hz.harmonize_ehr(frames, hz.load_vocabulary(), local_lab_codes={}, unit_alias=SiteConfig(SITE).unit_alias)


def test_bundle_reads_into_the_csv_frames_and_ndjson_gives_the_same_rows(tmp_path):
    bundle = _bundle()
    load, q = _read(_delivery(tmp_path, "bundle", {bundle.name: bundle}), tmp_path)
    counts = load.counts()
    assert counts["patients"] == {"received": 1, "loaded": 1, "quarantined": 0}
    assert counts["encounters"]["loaded"] == 19 and counts["conditions"]["loaded"] == 4
    assert counts["medications"]["loaded"] == 4 and counts["procedures"]["loaded"] == 8
    obs = load.tables["observations"].frame
    assert {"8480-6", "8462-4"} <= set(obs["CODE"])  # blood-pressure panel components become rows
    assert set(obs["TYPE"]) == {"numeric", "text"}
    assert str(obs["DATE"].dtype) == "datetime64[ns]" and q.count() == 0
    # the same resources as bulk NDJSON (one resource per line, split by type as a bulk export does)
    doc = json.loads(bundle.read_text())
    nd = tmp_path / "nd"
    nd.mkdir()
    by_type: dict[str, list[str]] = {}
    for e in doc["entry"]:
        by_type.setdefault(e["resource"]["resourceType"], []).append(json.dumps(e["resource"]))
    files = {}
    for rtype, lines in by_type.items():
        (nd / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")
        files[f"{rtype}.ndjson"] = nd / f"{rtype}.ndjson"
    load_nd, _ = _read(_delivery(tmp_path, "ndjson", files), tmp_path)
    for table, t in load.tables.items():
        a = t.frame.drop(columns=["_source_file", "_source_row"]).sort_values(list(t.frame.columns[:3])).reset_index(drop=True)
        b = load_nd.tables[table].frame.drop(columns=["_source_file", "_source_row"])
        b = b.sort_values(list(t.frame.columns[:3])).reset_index(drop=True)[a.columns]
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=table)


def test_unreadable_file_and_resource_without_subject_are_quarantined(tmp_path):
    d = tmp_path / "bad"
    (d / "ehr").mkdir(parents=True)
    (d / "ehr" / "broken.json").write_text('{"resourceType": "Bundle", "entry": [')
    cond = {"resourceType": "Condition", "code": {"coding": [{"code": "44054006"}]}, "onsetDateTime": "2020-01-01"}
    ok = dict(cond, subject={"reference": "Patient/p1"})
    (d / "ehr" / "Condition.ndjson").write_text(json.dumps(cond) + "\n" + json.dumps(ok) + "\n")
    load, q = _read(d, tmp_path)
    assert load.counts()["conditions"] == {"received": 2, "loaded": 1, "quarantined": 1}
    assert load.tables["conditions"].frame["PATIENT"].tolist() == ["p1"]
    reasons = q.reasons()
    assert reasons.get("unreadable FHIR file") == 1 and reasons.get("missing value") == 1


def test_patient_in_both_formats_harmonizes_to_identical_rows(tmp_path):
    bundle = _bundle()
    pid_raw = bundle.stem.rsplit("_", 1)[-1]
    csv_dir = shared_data("ehr", "synthea_59", "csv")
    tables = ["patients", "encounters", "conditions", "observations", "medications", "procedures"]
    csv_load, _ = _read(_delivery(tmp_path, "csv", {f"{t}.csv": csv_dir / f"{t}.csv" for t in tables}), tmp_path)
    fhir_load, _ = _read(_delivery(tmp_path, "fhir", {bundle.name: bundle}), tmp_path)
    key = deid.DeidKey.from_secret(TEST_SECRET, max_shift_days=120)
    pid = deid.pseudonym(key, SITE, pid_raw, "person")
    a, b = _omop(csv_load), _omop(fhir_load)
    # Not compared, by construction of the two exports: visit ids (Synthea gives encounters different
    # UUIDs in its CSV and FHIR runs), lineage, drug end dates and dispenses (not in a FHIR
    # MedicationRequest), DALY/QALY/QOLS (CSV observations; FHIR carries them as Patient extensions), and
    # the encounter class as delivered (FHIR's ActCode AMB covers Synthea's wellness and ambulatory):
    # the harmonized `visit_concept` is compared instead.
    skip = {"visit_id", "source_file", "source_row", "delivery_id", "drug_exposure_end_datetime", "dispenses",
            "description", "reason_code", "category", "visit_source_code", "encounter_class", "visit_source_value"}
    compared = 0
    for table in a.tables:
        x = a.tables[table][a.tables[table]["person_id"] == pid]
        y = b.tables[table][b.tables[table]["person_id"] == pid]
        if table == "measurement":
            x = x[~x["measurement_source_value"].isin(["DALY", "QALY", "QOLS"])]
        cols = [c for c in x.columns if c not in skip]
        if table == "person":
            cols = [c for c in cols if c not in ("state",)]  # CSV spells the state out, FHIR abbreviates it
        assert len(x) == len(y) and len(x) > 0, table
        if table == "measurement":
            # Synthea's CSV writes values rounded to 1 decimal, its FHIR keeps full precision: the
            # canonical values must agree to the CSV's precision, everything else exactly
            cols = [c for c in cols if c not in ("value_source_value", "value_as_number")]
        key_cols = [c for c in cols if "datetime" in c or c.endswith("source_value")] or cols
        xs = x.sort_values(key_cols).reset_index(drop=True)
        ys = y.sort_values(key_cols).reset_index(drop=True)
        pd.testing.assert_frame_equal(xs[cols].astype(object), ys[cols].astype(object), obj=table)
        if table == "measurement":
            diff = (xs["value_as_number"] - ys["value_as_number"]).abs()
            assert (diff <= 0.05 + 1e-9).all(), float(diff.max())
        compared += len(x)
    assert compared >= 170
