"""Every real file in ../shared/data/{bedside,ecg,ventilator,wearable} is read and yields features or a
clear reason (WFDB, PB-840, test-lung, Fitbit JSON, ActiGraph/Actiwatch counts, PPG/ECG CSVs, raw
accelerometer binaries .cwa/.bin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twin_pipeline.lib.waveform import feature_columns, file_features

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# Rates of the bare one-column CSVs, from the data README (the files do not carry them).
CSV_RATES = {"ecg/edb": 250.0, "ecg/nstdb_118": 360.0, "wearable/ppg/data.csv": 100.0,
             "wearable/ppg/ring_data.csv": 32.0}


def _cases() -> list[tuple[str, str | None, float | None]]:
    cases = []
    for folder in ("bedside", "ecg", "ventilator", "wearable"):
        for p in sorted((DATA / folder).rglob("*")):
            rel = p.relative_to(DATA).as_posix()
            if p.is_dir() or p.suffix in (".dat", ".atr", ".mat", ".txt") or rel.endswith("_ann.csv") \
                    or rel.endswith("_annotations.csv") or "breath_meta" in rel:
                continue
            if p.suffix == ".hea":
                # multi-segment: only the top-level record (segments and layout are read through it)
                if "multi-segment" in rel and (p.stem.startswith("3234460") or p.stem.startswith("041s0")):
                    continue
                if "mitdb" in rel and p.stem not in ("100s", "207"):  # 2 of the 18 (all 18: benchmarks/ecg_rpeaks.py)
                    continue
            kind = "ecg_monitor" if rel.startswith("ecg/") else "ventilator" if rel.startswith("ventilator/") else None
            rate = next((r for k, r in CSV_RATES.items() if rel.startswith(k)), None)
            cases.append((rel, kind, rate))
    return cases


@pytest.mark.parametrize(("rel", "kind", "rate"), _cases(), ids=[c[0] for c in _cases()])
def test_every_shared_record_gives_features_or_a_reason(rel, kind, rate):
    path = DATA / rel
    out = file_features(path, kind, sampling_rate=rate)
    assert set(feature_columns(out["device_kind"])) <= set(out)
    assert out["quality_flag"] in ("ok", "low_quality", "no_signal")
    if out["quality_flag"] != "ok":
        assert out["quality_reason"], "a flag other than ok must carry its reason"
    numeric = [k for k in feature_columns(out["device_kind"])
               if k not in ("quality_flag", "quality_reason") and not k.endswith(("_flag", "_reason"))]
    if out["quality_flag"] == "no_signal":
        return
    # something physiological came out, inside plausible ranges
    values = {k: out[k] for k in numeric}
    assert any(np.isfinite(v) for k, v in values.items() if k not in RECORD_KEYS), rel
    for key, (lo, hi) in RANGES.items():
        if key in out and np.isfinite(out[key]):
            assert lo <= out[key] <= hi, (rel, key, out[key])


RECORD_KEYS = ("duration_s", "sampling_rate_hz", "n_channels")
RANGES = {"hr_mean_bpm": (20, 250), "pulse_rate_bpm": (25, 230), "resting_hr_bpm": (25, 230),
          "resp_rate_bpm": (4, 70), "tidal_volume_insp_ml": (20, 3000), "peep_cmh2o": (-5, 40),
          "sedentary_fraction": (0, 1), "ecg_quality": (0, 1), "pleth_pulse_rate_bpm": (25, 230),
          "pleth_quality": (0, 1)}


def test_multi_segment_numerics_record_has_no_ecg_reason():
    out = file_features(DATA / "bedside/multi-segment/s25047/s25047-2704-05-04-10-44n.hea")
    assert out["quality_flag"] == "no_signal" and out["quality_reason"] == "missing_channel:ECG"


def test_testlung_pressure_only_export_gives_pressure_features():
    out = file_features(DATA / "ventilator/testlung/low_rate.csv", "ventilator")
    assert out["quality_reason"] == "pressure_only" and out["sampling_rate_hz"] in (100.0, 133.0)
    assert 4 <= out["resp_rate_bpm"] <= 70 and np.isnan(out["tidal_volume_insp_ml"])


def test_bedside_pleth_records_carry_pleth_features():
    for name in ("a103l", "v102s"):
        out = file_features(DATA / f"bedside/{name}.hea")
        assert out["device_kind"] == "ecg_monitor" and out["pleth_quality_flag"] == "ok"
        assert abs(out["pleth_pulse_rate_bpm"] - out["hr_mean_bpm"]) < 10  # same heart, two sensors
    mimic = file_features(DATA / "bedside/03700181.hea")  # ECG + ABP + RESP, no PLETH
    assert mimic["pleth_quality_reason"] == "no_pleth_channel"


def test_raw_accelerometer_binaries_give_activity_features():
    for name in ("ax3_testfile.cwa", "GENEActiv_testfile.bin", "mtx_25Hz_acc_HR.BIN"):
        out = file_features(DATA / "wearable/accelerometer" / name)
        assert out["device_kind"] == "wearable" and out["activity_quality_flag"] in ("ok", "low_quality")
        assert 0 <= out["activity_counts_per_min"] < 45 and out["sedentary_fraction"] == 1.0  # test files at rest
