"""The generated landing files: contract layout, determinism, site differences, PHI, vocab, truth."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
import yaml

import twin_pipeline
from twin_pipeline.synth.generator import generate_cohort, plant_bad_rows
from twin_pipeline.synth.ehr import EHR_COLUMNS
from twin_pipeline.synth.interviews import RECORD_COLUMNS, REDCAP_DICTIONARY_COLUMNS
from twin_pipeline.synth.sites import load_vocab

from .conftest import SHORT_WAVEFORMS, run_generator

REPO = Path(twin_pipeline.__file__).parents[1]
SYNTHEA = REPO.parent / "shared" / "data" / "ehr" / "synthea_59" / "csv"
SIGNALS = {"ecg_monitor": (["MLII", "V5"], ["mV", "mV"]),
           "ventilator": (["Paw", "Flow"], ["cmH2O", "L/min"]),
           "wearable": (["PPG", "ACC"], ["adu", "g"])}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read(site_dir: Path, rel: str) -> pd.DataFrame:
    """Concatenate one landing CSV over all deliveries of a site (strings only)."""
    frames = [pd.read_csv(d / rel, dtype=str, keep_default_na=False)
              for d in sorted(site_dir.iterdir())]
    return pd.concat(frames, ignore_index=True)


def _site_yaml(root: Path, site: str) -> dict:
    return yaml.safe_load((root / "sites" / f"{site}.yaml").read_text())


# ---------------------------------------------------------------- determinism ----------------
def test_same_seed_gives_byte_identical_files(small_cohort, tmp_path):
    root, summary = small_cohort
    again, _ = run_generator(tmp_path, sites=2, patients=20, seed=11,
                             waveform_seconds=SHORT_WAVEFORMS)
    first, second = _hashes(root), _hashes(tmp_path)
    assert len(first) > 50 and any(k.endswith(".dat") for k in first)
    assert first == second
    assert again == summary


def test_different_seed_gives_different_files(small_cohort, tmp_path):
    root, _ = small_cohort
    run_generator(tmp_path, sites=2, patients=20, seed=12, waveform_seconds=SHORT_WAVEFORMS)
    a, b = _hashes(root / "landing"), _hashes(tmp_path / "landing")
    pat = "hospital_a/2026-10-01/ehr/patients.csv"
    assert a[pat] != b[pat]
    assert _hashes(root / "sites") == _hashes(tmp_path / "sites")  # conventions do not depend on seed


# ---------------------------------------------------------------- contract layout -------------
def test_layout_columns_and_ready_marker(small_cohort):
    root, summary = small_cohort
    assert sorted(summary["sites"]) == ["hospital_a", "hospital_b"]
    for site in ("hospital_a", "hospital_b"):
        deliveries = sorted(p.name for p in (root / "landing" / site).iterdir())
        assert deliveries == ["2026-10-01", "2026-11-01"]
        for d in deliveries:
            ddir = root / "landing" / site / d
            assert (ddir / "_READY").exists()
            assert (ddir / "_READY").stat().st_mtime_ns >= max(
                p.stat().st_mtime_ns for p in ddir.rglob("*") if p.is_file())
            for table, cols in EHR_COLUMNS.items():
                header = next(csv.reader((ddir / "ehr" / f"{table}.csv").open()))
                assert header == list(cols)
                synthea = next(csv.reader((SYNTHEA / f"{table}.csv").open()))
                assert header[:len(synthea)] == synthea  # Synthea order; extras only appended
            rec_header = next(csv.reader((ddir / "interviews" / "records.csv").open()))
            assert rec_header == list(RECORD_COLUMNS)
            dd = pd.read_csv(ddir / "interviews" / "data_dictionary.csv", dtype=str)
            assert list(dd.columns) == list(REDCAP_DICTIONARY_COLUMNS) and len(dd.columns) == 18
            assert set(dd.loc[dd["Identifier?"] == "y", "Variable / Field Name"]) == {
                "patient_id", "full_name", "phone"}
            man = pd.read_csv(ddir / "waveforms" / "manifest.csv")
            assert list(man.columns) == ["record", "patient_id", "device_kind", "device_serial",
                                         "start_time", "duration_s", "sampling_rate_hz"]


def test_sites_differ_in_size_dates_units_and_devices(medium_cohort):
    root, summary = medium_cohort
    sizes = {s: v["patients"] for s, v in summary["sites"].items()}
    assert sizes == {"hospital_a": 84, "hospital_b": 60, "hospital_c": 36}
    formats = {}
    for site in sizes:
        conf = _site_yaml(root, site)
        formats[site] = conf["date_format"]
        pts = _read(root / "landing" / site, "ehr/patients.csv")
        enc = _read(root / "landing" / site, "ehr/encounters.csv")
        rec = _read(root / "landing" / site, "interviews/records.csv")
        for v in pts.BIRTHDATE:
            dt.datetime.strptime(v, conf["date_format"])
        for v in enc.START:
            dt.datetime.strptime(v, conf["datetime_format"])
        for v in rec.interview_date:
            dt.datetime.strptime(v, conf["date_format"])
        man = _read(root / "landing" / site, "waveforms/manifest.csv")
        assert set(man.device_kind) == set(conf["devices"])
        ecg = man[man.device_kind == "ecg_monitor"]
        assert set(ecg.sampling_rate_hz.astype(int)) == {conf["sampling_rates_hz"]["ecg_monitor"]}
    assert formats == {"hospital_a": "%Y-%m-%d", "hospital_b": "%d/%m/%Y", "hospital_c": "%m/%d/%Y"}
    assert _site_yaml(root, "hospital_c")["sampling_rates_hz"]["ecg_monitor"] == 500
    assert _site_yaml(root, "hospital_b")["small_cell_threshold"] == 3
    obs_b = _read(root / "landing" / "hospital_b", "ehr/observations.csv")
    obs_c = _read(root / "landing" / "hospital_c", "ehr/observations.csv")
    assert {"GLU", "CREA"} <= set(obs_b.CODE) and not {"2345-7", "2160-0"} & set(obs_b.CODE)
    assert set(obs_b[obs_b.CODE == "GLU"].UNITS) == {"mmol/l"}
    assert set(obs_c[obs_c.CODE == "29463-7"].UNITS) == {"lbs"}
    assert set(obs_c[obs_c.CODE == "8310-5"].UNITS) == {"F"}
    temp_f = pd.to_numeric(obs_c[obs_c.CODE == "8310-5"].VALUE)
    assert 96 < temp_f.median() < 100


def test_committed_site_yamls_match_generator_output(small_cohort):
    root, _ = small_cohort
    for site in ("hospital_a", "hospital_b"):
        assert (REPO / "data" / "sites" / f"{site}.yaml").read_bytes() == \
            (root / "sites" / f"{site}.yaml").read_bytes()
    committed_c = yaml.safe_load((REPO / "data" / "sites" / "hospital_c.yaml").read_text())
    assert committed_c["unit_aliases"]["*"] == {"lbs": "[lb_av]", "F": "[degF]"}


# ---------------------------------------------------------------- vocabulary -------------------
def test_every_emitted_code_and_unit_is_in_vocab_or_site_yaml(medium_cohort):
    root, _ = medium_cohort
    vocab = load_vocab()
    conversions = set(zip(vocab["unit_conversions"].loinc_code, vocab["unit_conversions"].from_unit))
    measurement_codes = set(vocab["measurements"].loinc_code)
    condition_codes = set(vocab["conditions"].source_code)
    for site in ("hospital_a", "hospital_b", "hospital_c"):
        conf = _site_yaml(root, site)
        aliases = (conf["unit_aliases"] or {}).get("*", {})
        sdir = root / "landing" / site
        obs = _read(sdir, "ehr/observations.csv")
        for code, unit in set(zip(obs.CODE, obs.UNITS)):
            loinc = conf["local_lab_codes"].get(code, code)
            assert loinc in measurement_codes, (site, code)
            assert (loinc, aliases.get(unit, unit)) in conversions, (site, code, unit)
        assert pd.to_numeric(obs.VALUE).notna().all()
        cond = _read(sdir, "ehr/conditions.csv")
        assert set(cond.CODE) <= condition_codes
        meds = _read(sdir, "ehr/medications.csv")
        assert set(meds.CODE) <= set(vocab["drugs"].source_code)
        procs = _read(sdir, "ehr/procedures.csv")
        assert set(procs.CODE) <= set(vocab["procedures"].source_code)
        for table in (meds, procs, _read(sdir, "ehr/encounters.csv")):
            assert set(table.REASONCODE) - {""} <= condition_codes
        arms_seen = set(meds.CODE) & {"197541", "2587898"} | set(procs.CODE) & {"229072007"}
        assert arms_seen == {"197541", "2587898", "229072007"}


# ---------------------------------------------------------------- PHI -------------------------
def test_raw_files_carry_phi(medium_cohort):
    root, _ = medium_cohort
    sdir = root / "landing" / "hospital_a"
    pts = _read(sdir, "ehr/patients.csv").drop_duplicates("Id")
    rec = _read(sdir, "interviews/records.csv")
    assert pts.SSN.str.fullmatch(r"\d{3}-\d{2}-\d{4}").all()
    assert pts.MRN.is_unique and pts.FIRST.ne("").all() and pts.PASSPORT.ne("").all()
    assert pts.ZIP.str.fullmatch(r"\d{5}").all()
    restricted = set(load_vocab()["restricted_zip3"].zip3)
    all_zip3 = {z[:3] for s in ("hospital_a", "hospital_b", "hospital_c")
                for z in _read(root / "landing" / s, "ehr/patients.csv").ZIP}
    assert all_zip3 & restricted
    ages = [(dt.date(2026, 10, 1) - dt.date.fromisoformat(b)).days / 365.25 for b in pts.BIRTHDATE]
    assert max(ages) > 89
    by_id = pts.set_index("Id")
    notes = rec.merge(by_id[["LAST", "MRN", "PHONE"]], left_on="patient_id", right_index=True)
    assert notes.apply(lambda r: r.LAST in r.notes, axis=1).all()
    assert notes.apply(lambda r: r.MRN in r.notes, axis=1).mean() > 0.2
    assert notes.apply(lambda r: r.PHONE in r.notes, axis=1).mean() > 0.15
    assert notes.notes.str.contains(r"Seen with (?:daughter|son|wife|husband|sister|brother|"
                                    r"mother|father|partner) \w+", regex=True).any()
    man = _read(sdir, "waveforms/manifest.csv").merge(by_id, left_on="patient_id", right_index=True)
    row = man.iloc[0]
    assert row.MRN in row.record
    header = next(sdir.glob(f"*/waveforms/{row.record}.hea")).read_text()
    assert f"patient: {row.FIRST} {row.LAST} mrn: {row.MRN} dob: {row.BIRTHDATE}" in header


# ---------------------------------------------------------------- deliveries ------------------
def test_deliveries_are_incremental_and_outcomes_land_later(medium_cohort):
    root, _ = medium_cohort
    site = "hospital_b"
    conf = _site_yaml(root, site)
    d1, d2 = root / "landing" / site / "2026-10-01", root / "landing" / site / "2026-11-01"
    enc1 = pd.read_csv(d1 / "ehr/encounters.csv", dtype=str)
    enc2 = pd.read_csv(d2 / "ehr/encounters.csv", dtype=str)
    start1 = pd.to_datetime(enc1.START, format=conf["datetime_format"])
    start2 = pd.to_datetime(enc2.START, format=conf["datetime_format"])
    assert start1.max() < pd.Timestamp("2026-10-01") <= start2.min()
    assert start2.max() < pd.Timestamp("2026-11-01")
    assert start1.min() < pd.Timestamp("2025-01-01")  # about two years of history
    p1 = set(pd.read_csv(d1 / "ehr/patients.csv", dtype=str).Id)
    p2 = set(pd.read_csv(d2 / "ehr/patients.csv", dtype=str).Id)
    referenced2 = set(enc2.PATIENT) | set(pd.read_csv(d2 / "interviews/records.csv", dtype=str).patient_id)
    assert referenced2 <= p2 and (p2 & p1) and (p2 - p1)  # repeated and new patients
    walk = [pd.read_csv(d / "ehr/observations.csv", dtype=str).query("CODE == '64098-7'")
            for d in (d1, d2)]
    truth = pd.read_csv(root / "truth" / site / "patients.csv")
    followup_ids = set(truth.loc[truth.outcome_observed == 1, "patient_id"])
    late = walk[1].PATIENT.isin(followup_ids).sum()
    assert late > 0.5 * len(followup_ids)


# ---------------------------------------------------------------- truth -----------------------
def test_ground_truth_is_outside_landing_and_consistent(medium_cohort, tmp_path):
    root, _ = medium_cohort
    assert not any("truth" in p.name or p.name == "site_profile.json"
                   for p in (root / "landing").rglob("*"))
    site = "hospital_b"
    truth = pd.read_csv(root / "truth" / site / "patients.csv")
    for col in ["site_id", "patient_id", "true_ra", "true_oa", "coded_ra", "coded_oa", "therapy_arm",
                "index_date", "baseline_6mwd_m", "y_standard_care", "y_antiviral",
                "tau_pulmonary_rehab", "observed_outcome_m"]:
        assert col in truth.columns
    cond = _read(root / "landing" / site, "ehr/conditions.csv")
    coded_ra_ids = set(cond.loc[cond.CODE == "69896004", "PATIENT"])
    assert coded_ra_ids == set(truth.loc[truth.coded_ra == 1, "patient_id"])
    # the evidence follows the TRUE phenotype: no true-OA patient gets methotrexate
    meds = _read(root / "landing" / site, "ehr/medications.csv")
    mtx_ids = set(meds.loc[meds.CODE == "105585", "PATIENT"])
    assert not mtx_ids & set(truth.loc[truth.true_oa == 1, "patient_id"])
    assert truth[(truth.true_oa == 1) & (truth.coded_ra == 1)].shape[0] >= 1
    obs = _read(root / "landing" / site, "ehr/observations.csv")
    walk = obs[obs.CODE == "64098-7"].merge(truth, left_on="PATIENT", right_on="patient_id")
    baseline = pd.to_numeric(walk.VALUE)
    assert (np.isclose(baseline, walk.baseline_6mwd_m) | np.isclose(baseline, walk.observed_outcome_m)).all()
    with pytest.raises(ValueError, match="truth_dir"):
        generate_cohort(tmp_path / "landing", sites=1, patients=3, truth_dir=tmp_path / "landing" / "t",
                        sites_dir=tmp_path / "sites")


# ---------------------------------------------------------------- waveforms -------------------
def test_wfdb_records_read_back_with_declared_rates_and_units(small_cohort):
    root, _ = small_cohort
    checked = set()
    for hea in sorted((root / "landing").rglob("*.hea")):
        ddir = hea.parent
        man = pd.read_csv(ddir / "manifest.csv").set_index("record")
        row = man.loc[hea.stem]
        rec = wfdb.rdrecord(str(hea.with_suffix("")))
        assert rec.fs == row.sampling_rate_hz
        assert rec.sig_len == int(round(row.duration_s * row.sampling_rate_hz))
        assert (rec.sig_name, rec.units) == SIGNALS[row.device_kind]
        assert rec.fmt == ["16", "16"]
        started = dt.datetime.combine(rec.base_date, rec.base_time)
        assert started.isoformat() == row.start_time
        checked.add(row.device_kind)
    assert checked == {"ecg_monitor", "ventilator", "wearable"}


def test_planted_invalid_and_flat_ecg_segments(medium_cohort):
    root, _ = medium_cohort
    truth = pd.read_csv(root / "truth" / "hospital_a" / "waveforms.csv")
    ecg = truth[truth.device_kind == "ecg_monitor"]
    assert 1 <= ecg.has_invalid_run.sum() <= max(2, 0.03 * len(ecg))
    assert 1 <= ecg.has_flat_segment.sum() <= max(2, 0.03 * len(ecg))
    for r in ecg.itertuples():
        if not (r.has_invalid_run or r.has_flat_segment) and r.Index % 20:
            continue  # check all flagged records and a sample of clean ones
        rec = wfdb.rdrecord(str(root / "landing" / "hospital_a" / r.delivery / "waveforms" / r.record))
        x = rec.p_signal[:, 0]
        assert bool(np.isnan(x).any()) == bool(r.has_invalid_run)
        if r.has_flat_segment:
            a = int(r.flat_start_s * rec.fs)
            assert np.ptp(x[a:a + int(r.flat_duration_s * rec.fs)]) == 0


# ---------------------------------------------------------------- bad rows ---------------------
def test_plant_bad_rows_corrupts_a_copy_and_reports_counts(small_cohort, tmp_path):
    root, _ = small_cohort
    src = root / "landing" / "hospital_a" / "2026-10-01"
    ddir = tmp_path / "2026-10-01"
    shutil.copytree(src, ddir)
    before = len(pd.read_csv(ddir / "ehr/observations.csv", dtype=str))
    dat_sizes = {p.name: p.stat().st_size for p in (ddir / "waveforms").glob("*.dat")}
    counts = plant_bad_rows(ddir, seed=1)
    assert set(counts) == {"unparseable_date", "non_numeric_value", "unknown_unit",
                           "missing_patient", "truncated_dat"}
    obs = pd.read_csv(ddir / "ehr/observations.csv", dtype=str, keep_default_na=False)
    planted = sum(v for k, v in counts.items() if k != "truncated_dat")
    assert len(obs) == before + planted
    assert (obs.PATIENT == "").sum() == counts["missing_patient"]
    assert pd.to_numeric(obs.VALUE, errors="coerce").isna().sum() == counts["non_numeric_value"]
    assert pd.to_datetime(obs.DATE, format="%Y-%m-%dT%H:%M:%SZ", errors="coerce").isna().sum() == \
        counts["unparseable_date"]
    shrunk = [n for n, s in dat_sizes.items() if (ddir / "waveforms" / n).stat().st_size < s]
    assert counts["truncated_dat"] == 1 and len(shrunk) == 1
    assert (ddir / "waveforms" / shrunk[0]).stat().st_size % 2 == 1
    assert plant_bad_rows(ddir, seed=1) == counts  # deterministic for a seed
    assert (src / "ehr/observations.csv").read_bytes() != (ddir / "ehr/observations.csv").read_bytes()


# ---------------------------------------------------------------- demo size ---------------------
def test_demo_cohort_size_and_timing(tmp_path):
    """The demo cohort (3 sites × 200, default waveforms); prints its size and generation time."""
    summary, seconds = run_generator(tmp_path, sites=3, patients=200, seed=7)
    total = summary["total"]
    print(f"\ndemo cohort: {total['patients']} patients, records {total['records']}, "
          f"{total['waveform_hours']:.1f} h of waveforms, generated in {seconds:.1f} s")
    assert {s: v["patients"] for s, v in summary["sites"].items()} == {
        "hospital_a": 280, "hospital_b": 200, "hospital_c": 120}
    a = summary["sites"]["hospital_a"]
    assert 0.5 <= a["records"]["ecg_monitor"] / a["patients"] <= 0.7
    assert 0.06 <= a["records"]["ventilator"] / a["patients"] <= 0.12
    assert 0.2 <= a["records"]["wearable"] / a["patients"] <= 0.4
    assert summary["sites"]["hospital_b"]["records"]["ventilator"] == 0
    assert summary["sites"]["hospital_c"]["records"]["wearable"] == 0
    assert 25 < total["waveform_hours"] < 45
    # the summary is aggregate only: no identifiers from the raw files
    text = repr(summary)
    pts = _read(tmp_path / "landing" / "hospital_a", "ehr/patients.csv")
    assert not any(v in text for v in list(pts.Id[:20]) + list(pts.MRN[:20]) + list(pts.LAST[:20]))
    assert re.search(r"\d{3}-\d{2}-\d{4}", text) is None


def test_planted_effect_shift_is_in_the_truth_profile_only(medium_cohort):
    root, _ = medium_cohort
    import json

    for site, shift in (("hospital_a", 0.0), ("hospital_b", -20.0), ("hospital_c", 15.0)):
        truth = json.loads((root / "truth" / site / "site_profile.json").read_text())
        assert truth["effect_shift_m"] == {"pulmonary_rehab": shift}
        assert "effect_shift" not in (root / "sites" / f"{site}.yaml").read_text()
    assert not any("effect_shift" in p.read_text(errors="ignore")
                   for p in (root / "landing").rglob("*.csv"))
