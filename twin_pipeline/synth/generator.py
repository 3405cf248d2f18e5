"""Synthetic multi-site long-COVID cohort in the landing contract, with ground truth kept apart.

``generate_cohort`` writes, for every site, ``deliveries`` monthly deliveries
(``<out>/<site_id>/<YYYY-MM-DD>/`` with ``ehr/``, ``interviews/``, ``waveforms/`` and ``_READY``
written last), the site conventions ``<sites_dir>/<site_id>.yaml`` and the ground truth
``<truth_dir>/<site_id>/`` (patients.csv, waveforms.csv, site_profile.json). Same arguments →
byte-identical files (numpy ``Generator`` + seeded ``Faker``; no wall clock).
``plant_bad_rows`` corrupts a delivery for robustness tests.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.synth.cohort import ARMS, cohort_simulate, delivery_dates
from twin_pipeline.synth.ehr import (DATE_COLUMNS, DATETIME_COLUMNS, EHR_COLUMNS, LandingRows,
                                     landing_rows_build)
from twin_pipeline.synth.identity import faker_for, identities_generate
from twin_pipeline.synth.interviews import (RECORD_COLUMNS, REDCAP_DICTIONARY_COLUMNS,
                                            interview_dictionary)
from twin_pipeline.synth.sites import (DEVICE_KINDS, SiteProfile, load_vocab, site_profiles,
                                       site_sizes, write_site_yaml)
from twin_pipeline.synth.waveforms import (ecg_synthesize, ventilator_synthesize,
                                           waveform_write, wearable_synthesize)

DEFAULT_WAVEFORM_SECONDS = {"ecg_monitor": 120.0, "ventilator": 180.0, "wearable": 600.0}
MANIFEST_COLUMNS = ("record", "patient_id", "device_kind", "device_serial", "start_time",
                    "duration_s", "sampling_rate_hz")
PLANTED_ECG_SHARE = 0.01  # share of ECG records with an invalid run, and (others) with a flat line

_TRUTH_FLAGS = ("true_ra", "true_oa", "true_t1d", "true_t2d", "true_asthma", "true_copd",
                "coded_ra", "coded_oa", "coded_t1d", "coded_t2d", "coded_asthma", "coded_copd")


def _is_relative_to(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _write_csv(path: Path, columns: tuple[str, ...] | list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])


def _fmt_row(row: dict, date_cols: tuple[str, ...], datetime_cols: tuple[str, ...],
             profile: SiteProfile) -> dict:
    out = dict(row)
    for c in date_cols:
        v = out.get(c)
        out[c] = v.strftime(profile.date_format) if v is not None else ""
    for c in datetime_cols:
        v = out.get(c)
        out[c] = v.strftime(profile.datetime_format) if v is not None else ""
    return out


def _row_day(value: dt.date | dt.datetime) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


_ROW_DATE_COLUMN = {"encounters": "START", "conditions": "START", "observations": "DATE",
                    "medications": "START", "procedures": "START"}


def _delivery_of(day: dt.date, dates: list[dt.date]) -> int:
    """Index of the delivery holding a row dated ``day`` (== len(dates) when after the last cut-off)."""
    return bisect.bisect_right(dates, day)


def _plant_ecg_faults(plans: list[dict], rng: np.random.Generator) -> None:
    """Mark ~1 % of ECG plans for an invalid (-32768) run and ~1 % (others) for a flat line."""
    ecg = [k for k, p in enumerate(plans) if p["device_kind"] == "ecg_monitor"]
    if len(ecg) < 2:
        return
    k = max(1, int(round(PLANTED_ECG_SHARE * len(ecg))))
    chosen = rng.choice(ecg, size=min(2 * k, len(ecg)), replace=False)
    for j, idx in enumerate(chosen):
        plan = plans[int(idx)]
        dur = float(plan["duration_s"])
        length = round(float(rng.uniform(0.05, 0.15) * dur), 2)
        start = round(float(rng.uniform(0.1 * dur, max(0.1 * dur, dur - length - 0.05 * dur))), 2)
        if j < k:
            plan["invalid_start_s"], plan["invalid_duration_s"] = start, length
        else:
            plan["flat_start_s"], plan["flat_duration_s"] = start, length


def _waveform_signal(plan: dict, rng: np.random.Generator) -> np.ndarray:
    fs = int(plan["sampling_rate_hz"])
    dur = float(plan["duration_s"])
    kind = plan["device_kind"]
    if kind == "ecg_monitor":
        sig, true_rate = ecg_synthesize(dur, fs, plan["true_hr_bpm"], rng)
        plan["true_hr_bpm"] = round(true_rate, 3)
        if "invalid_start_s" in plan:
            a = int(plan["invalid_start_s"] * fs)
            sig[a:a + int(plan["invalid_duration_s"] * fs), :] = np.nan
        if "flat_start_s" in plan:
            a = int(plan["flat_start_s"] * fs)
            b = a + int(plan["flat_duration_s"] * fs)
            sig[a:b, :] = sig[a, :]
        return sig
    if kind == "ventilator":
        return ventilator_synthesize(
            dur, fs, rr_bpm=plan["true_rr_bpm"], tidal_volume_ml=plan["true_tidal_volume_ml"],
            peep_cmh2o=plan["true_peep_cmh2o"],
            compliance_ml_cmh2o=plan["true_compliance_ml_cmh2o"],
            resistance_cmh2o_l_s=plan["true_resistance_cmh2o_l_s"],
            mode=plan["ventilation_mode"], rng=rng)
    sig, bouts = wearable_synthesize(dur, fs, resting_hr=plan["true_resting_hr_bpm"], rng=rng)
    plan["activity_bouts_s"] = ";".join(f"{a:.2f}-{b:.2f}" for a, b in bouts)
    return sig


def _truth_patients(cohort: pd.DataFrame, dates: list[dt.date]) -> pd.DataFrame:
    t = cohort.copy()
    t.insert(2, "first_delivery", [dates[k].isoformat() for k in t["entry_delivery"]])
    t = t.drop(columns=["entry_delivery"])
    for c in t.columns:
        if t[c].dtype == bool:
            t[c] = t[c].astype(int)
    for c in ("covid_date", "long_covid_date", "intake_date", "index_date", "followup_date"):
        t[c] = [d.isoformat() if d is not None else "" for d in t[c]]
    flags = list(_TRUTH_FLAGS)
    lead = ["site_id", "patient_id", "first_delivery"] + flags + ["therapy_arm", "index_date",
                                                                  "baseline_6mwd_m"]
    lead += [f"y_{a}" for a in ARMS] + [f"tau_{a}" for a in ARMS] + ["observed_outcome_m",
                                                                    "outcome_observed"]
    return t[lead + [c for c in t.columns if c not in lead]]


def _site_generate(out: Path, profile: SiteProfile, site_index: int, n_patients: int, seed: int,
                   dates: list[dt.date], truth_dir: Path, sites_dir: Path,
                   waveform_seconds: dict[str, float], vocab: dict[str, pd.DataFrame]) -> dict:
    rng = np.random.default_rng([int(seed), site_index])
    fake = faker_for(seed, site_index)
    cohort = cohort_simulate(profile, n_patients, dates, rng,
                             ventilator_available="ventilator" in profile.devices)
    idents = identities_generate(cohort, profile, site_index, fake, rng,
                                 vocab["restricted_zip3"]["zip3"].tolist())
    cohort.insert(1, "patient_id", idents["Id"].to_numpy())
    rows: LandingRows = landing_rows_build(cohort, idents, profile, vocab, rng, dates[-1],
                                           waveform_seconds)
    write_site_yaml(profile, sites_dir)

    n_del = len(dates)
    # ---- split rows into deliveries ---------------------------------------------------------
    per_delivery: list[dict[str, list[dict]]] = [{k: [] for k in EHR_COLUMNS} for _ in dates]
    interviews: list[list[dict]] = [[] for _ in dates]
    plans: list[list[dict]] = [[] for _ in dates]
    touched: list[set[str]] = [set() for _ in dates]
    for table, date_col in _ROW_DATE_COLUMN.items():
        for r in rows.tables[table]:
            k = _delivery_of(_row_day(r[date_col]), dates)
            if k < n_del:
                per_delivery[k][table].append(r)
                touched[k].add(r["PATIENT"])
    for r in rows.interviews:
        k = _delivery_of(r["interview_date"], dates)
        if k < n_del:
            interviews[k].append(r)
            touched[k].add(r["patient_id"])
    delivered_plans = []
    for p in rows.waveforms:
        k = _delivery_of(p["start"].date(), dates)
        if k < n_del:
            p["delivery"] = dates[k].isoformat()
            plans[k].append(p)
            delivered_plans.append(p)
            touched[k].add(p["patient_id"])
    _plant_ecg_faults(delivered_plans, rng)

    ident_rows = idents.to_dict("records")
    site_dir = out / profile.site_id
    dictionary = interview_dictionary(profile.date_format)
    counts = {t: 0 for t in EHR_COLUMNS}
    counts["interviews"] = 0
    by_kind = dict.fromkeys(DEVICE_KINDS, 0)
    seconds = 0.0
    for k, day in enumerate(dates):
        ddir = site_dir / day.isoformat()
        per_delivery[k]["patients"] = [r for r in ident_rows if r["Id"] in touched[k]]
        for table, cols in EHR_COLUMNS.items():
            formatted = [_fmt_row(r, DATE_COLUMNS.get(table, ()), DATETIME_COLUMNS.get(table, ()),
                                  profile) for r in per_delivery[k][table]]
            _write_csv(ddir / "ehr" / f"{table}.csv", cols, formatted)
            counts[table] += len(formatted)
        recs = [_fmt_row(r, ("interview_date",), (), profile) for r in interviews[k]]
        _write_csv(ddir / "interviews" / "records.csv", RECORD_COLUMNS, recs)
        _write_csv(ddir / "interviews" / "data_dictionary.csv", REDCAP_DICTIONARY_COLUMNS,
                   dictionary)
        counts["interviews"] += len(recs)
        wdir = ddir / "waveforms"
        wdir.mkdir(parents=True, exist_ok=True)
        manifest = []
        for j, plan in enumerate(plans[k]):
            rec_rng = np.random.default_rng([int(seed), site_index, 7919, k, j])
            signal = _waveform_signal(plan, rec_rng)
            waveform_write(plan["record"], plan["device_kind"], signal,
                           int(plan["sampling_rate_hz"]), plan["start"], plan["comments"], wdir)
            manifest.append({
                "record": plan["record"], "patient_id": plan["patient_id"],
                "device_kind": plan["device_kind"], "device_serial": plan["device_serial"],
                "start_time": plan["start"].strftime("%Y-%m-%dT%H:%M:%S"),
                "duration_s": f"{float(plan['duration_s']):g}",
                "sampling_rate_hz": int(plan["sampling_rate_hz"])})
            by_kind[plan["device_kind"]] += 1
            seconds += float(plan["duration_s"])
        _write_csv(wdir / "manifest.csv", MANIFEST_COLUMNS, manifest)
        (ddir / "_READY").write_text("", encoding="utf-8")

    # ---- ground truth (outside landing) -----------------------------------------------------
    tdir = truth_dir / profile.site_id
    tdir.mkdir(parents=True, exist_ok=True)
    _truth_patients(cohort, dates).to_csv(tdir / "patients.csv", index=False, lineterminator="\n")
    wcols = ["record", "patient_id", "device_kind", "delivery", "true_hr_bpm", "true_rr_bpm",
             "true_tidal_volume_ml", "true_peep_cmh2o", "true_resting_hr_bpm",
             "true_compliance_ml_cmh2o", "true_resistance_cmh2o_l_s", "ventilation_mode",
             "activity_bouts_s", "has_invalid_run", "invalid_start_s", "invalid_duration_s",
             "has_flat_segment", "flat_start_s", "flat_duration_s"]
    wrows = []
    for p in delivered_plans:
        r = {c: p.get(c) for c in wcols}
        r["has_invalid_run"] = int("invalid_start_s" in p)
        r["has_flat_segment"] = int("flat_start_s" in p)
        wrows.append(r)
    _write_csv(tdir / "waveforms.csv", wcols, wrows)
    (tdir / "site_profile.json").write_text(
        json.dumps(profile.truth_profile(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    delivered_ids = set().union(*touched)
    return {
        "patients": len(delivered_ids),
        "deliveries": [d.isoformat() for d in dates],
        "rows": counts,
        "records": by_kind,
        "waveform_hours": round(seconds / 3600.0, 3),
    }


def generate_cohort(out: Path, *, sites: int = 3, patients: int = 200, seed: int = 7,
                    truth_dir: Path, sites_dir: Path, deliveries: int = 2,
                    waveform_seconds: dict | None = None) -> dict:
    """Write ``deliveries`` deliveries per site under ``out`` in the landing contract.

    ``patients`` is the average per site (sites are sized ×1.4, ×1.0, ×0.6, … then rescaled);
    ``waveform_seconds`` overrides record durations per device kind (defaults: ECG 120 s,
    ventilator 180 s, wearable 600 s). Also writes ``<sites_dir>/<site>.yaml`` and the ground truth
    under ``truth_dir`` (which must lie outside ``out``). Returns an aggregate summary without
    PHI: per site the delivered patients, rows per table, records per device kind and waveform
    hours, plus totals.
    """
    out, truth_dir, sites_dir = Path(out), Path(truth_dir), Path(sites_dir)
    if _is_relative_to(truth_dir, out):
        raise ValueError(f"truth_dir {truth_dir} must not be inside the landing folder {out}")
    secs = dict(DEFAULT_WAVEFORM_SECONDS)
    if waveform_seconds:
        unknown = set(waveform_seconds) - set(DEVICE_KINDS)
        if unknown:
            raise ValueError(f"unknown device kinds in waveform_seconds: {sorted(unknown)}")
        secs.update({k: float(v) for k, v in waveform_seconds.items()})
    vocab = load_vocab()
    dates = delivery_dates(deliveries)
    profiles = site_profiles(sites)
    sizes = site_sizes(profiles, patients)
    summary: dict = {"seed": int(seed), "deliveries": [d.isoformat() for d in dates], "sites": {}}
    for i, (profile, n) in enumerate(zip(profiles, sizes)):
        summary["sites"][profile.site_id] = _site_generate(
            out, profile, i, n, seed, dates, truth_dir, sites_dir, secs, vocab)
    per_site = summary["sites"].values()
    summary["total"] = {
        "patients": sum(s["patients"] for s in per_site),
        "records": {k: sum(s["records"][k] for s in per_site) for k in DEVICE_KINDS},
        "waveform_hours": round(sum(s["waveform_hours"] for s in per_site), 3),
    }
    return summary


def plant_bad_rows(delivery_dir: Path, seed: int) -> dict:
    """Corrupt one delivery in place for robustness tests; return how many faults of each kind.

    Appends to ``ehr/observations.csv`` copies of valid rows with one fault each: an unparseable
    DATE, a non-numeric VALUE, an unknown UNITS, an empty PATIENT; and truncates one ``.dat`` file
    in ``waveforms/`` mid-sample. Kinds: ``unparseable_date``, ``non_numeric_value``,
    ``unknown_unit``, ``missing_patient``, ``truncated_dat``.
    """
    delivery_dir = Path(delivery_dir)
    rng = np.random.default_rng([int(seed), 4242])
    obs_path = delivery_dir / "ehr" / "observations.csv"
    with obs_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        body = list(reader)
    if not body:
        raise ValueError(f"{obs_path}: no observation rows to copy for planting")
    col = {c: i for i, c in enumerate(header)}
    faults = {
        "unparseable_date": ("DATE", "2026-13-45T25:61:00Z"),
        "non_numeric_value": ("VALUE", "see comment"),
        "unknown_unit": ("UNITS", "furlong/fortnight"),
        "missing_patient": ("PATIENT", ""),
    }
    counts: dict[str, int] = {}
    new_rows = []
    for kind, (column, value) in faults.items():
        n = int(rng.integers(1, 4))
        for _ in range(n):
            row = list(body[int(rng.integers(0, len(body)))])
            row[col[column]] = value
            new_rows.append(row)
        counts[kind] = n
    with obs_path.open("a", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(new_rows)
    dats = sorted((delivery_dir / "waveforms").glob("*.dat"))
    counts["truncated_dat"] = 0
    if dats:
        target = dats[int(rng.integers(0, len(dats)))]
        data = target.read_bytes()
        cut = max(1, (len(data) // 3) | 1)  # odd byte count: ends inside a 16-bit sample
        target.write_bytes(data[:cut])
        counts["truncated_dat"] = 1
    return counts
