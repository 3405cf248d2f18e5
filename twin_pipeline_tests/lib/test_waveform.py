"""record_features: one WFDB record per device kind in the landing-contract shape → full feature rows."""

from __future__ import annotations

from pathlib import Path

import neurokit2 as nk
import numpy as np
import pytest
import wfdb

from twin_pipeline.lib.ventilator import ventilator_simulate
from twin_pipeline.lib.waveform import DEVICE_KINDS, feature_columns, record_features
from twin_pipeline.sources.wfdb_io import WaveformReadError, read_record

BEDSIDE = Path(__file__).resolve().parents[3] / "shared" / "data" / "bedside"


def _write(
    tmp_path: Path, name: str, fs: float, sig_names: list[str], units: list[str], cols: list[np.ndarray]
) -> Path:
    wfdb.wrsamp(name, fs=fs, units=units, sig_name=sig_names, p_signal=np.column_stack(cols),
                fmt=["16"] * len(cols), write_dir=str(tmp_path))
    return tmp_path / name


def _ecg_record(tmp_path: Path, hr: float = 72, fs: int = 250, units: str = "mV", scale: float = 1.0) -> Path:
    x = nk.ecg_simulate(duration=120, sampling_rate=fs, heart_rate=hr, method="simple", random_state=7)
    return _write(tmp_path, f"ecg_{fs}_{units.replace('/', '')}", fs, ["MLII", "V5"], [units, units],
                  [x * scale, 0.7 * x * scale])


def test_feature_columns_are_stable_and_complete():
    assert DEVICE_KINDS == ("ecg_monitor", "ventilator", "wearable")
    for kind in DEVICE_KINDS:
        cols = feature_columns(kind)
        assert cols[:3] == ["duration_s", "sampling_rate_hz", "n_channels"]
        assert len(cols) == len(set(cols)) and "quality_flag" in cols and "quality_reason" in cols
    assert "hr_mean_bpm" in feature_columns("ecg_monitor")
    assert "tidal_volume_insp_ml" in feature_columns("ventilator")
    assert "resting_hr_bpm" in feature_columns("wearable")
    with pytest.raises(ValueError, match="scanner"):
        feature_columns("scanner")


@pytest.mark.parametrize("fs", [250, 500])
def test_ecg_monitor_record(tmp_path, fs):
    feats = record_features(_ecg_record(tmp_path, hr=72, fs=fs), "ecg_monitor")
    assert list(feats) == feature_columns("ecg_monitor")
    assert feats["duration_s"] == 120.0 and feats["sampling_rate_hz"] == fs and feats["n_channels"] == 2
    assert abs(feats["hr_mean_bpm"] - 72) <= 2 and feats["quality_flag"] == "ok"


def test_ecg_in_microvolts_is_converted(tmp_path):
    feats = record_features(_ecg_record(tmp_path, hr=90, units="uV", scale=1000.0), "ecg_monitor")
    assert abs(feats["hr_mean_bpm"] - 90) <= 2 and feats["quality_flag"] == "ok"


def test_ventilator_record(tmp_path):
    paw, flow = ventilator_simulate(120, 50, resp_rate=18, tidal_volume_ml=450, peep_cmh2o=6)
    rec = _write(tmp_path, "vent_1", 50, ["Paw", "Flow"], ["cmH2O", "L/min"], [paw, flow])
    feats = record_features(rec, "ventilator")
    assert list(feats) == feature_columns("ventilator")
    assert feats["quality_flag"] == "ok"
    assert abs(feats["resp_rate_bpm"] - 18) <= 0.9 and abs(feats["tidal_volume_exp_ml"] - 450) <= 22.5
    assert abs(feats["peep_cmh2o"] - 6) <= 0.3


def test_ventilator_record_with_pressure_only_gives_rate_but_no_volumes(tmp_path):
    paw, _ = ventilator_simulate(60, 50)
    rec = _write(tmp_path, "vent_2", 50, ["Paw"], ["cmH2O"], [paw])
    feats = record_features(rec, "ventilator")
    assert feats["quality_flag"] == "low_quality" and "pressure_only" in feats["quality_reason"]
    assert feats["n_breaths"] > 0 and 4 <= feats["resp_rate_bpm"] <= 70
    assert np.isnan(feats["tidal_volume_insp_ml"])


def test_ventilator_record_without_flow_or_pressure_is_no_signal(tmp_path):
    _, flow = ventilator_simulate(60, 50)
    rec = _write(tmp_path, "vent_3", 50, ["CO2"], ["mmHg"], [flow])
    feats = record_features(rec, "ventilator")
    assert feats["quality_flag"] == "no_signal" and feats["quality_reason"] == "missing_channel:Flow"
    assert feats["n_breaths"] == 0 and np.isnan(feats["resp_rate_bpm"])


def test_wearable_record(tmp_path):
    ppg = nk.ppg_simulate(duration=120, sampling_rate=50, heart_rate=66, random_state=3)
    acc = 1.0 + np.random.default_rng(3).normal(0, 0.005, len(ppg))
    rec = _write(tmp_path, "wear_1", 50, ["PPG", "ACC"], ["adu", "g"], [ppg * 1000, acc])
    feats = record_features(rec, "wearable")
    assert list(feats) == feature_columns("wearable")
    assert abs(feats["pulse_rate_bpm"] - 66) <= 3 and abs(feats["resting_hr_bpm"] - 66) <= 3
    assert feats["sedentary_fraction"] == 1.0 and feats["quality_flag"] == "ok"


def test_wearable_record_without_acc_keeps_ppg_features(tmp_path):
    ppg = nk.ppg_simulate(duration=120, sampling_rate=50, heart_rate=80, random_state=4)
    rec = _write(tmp_path, "wear_2", 50, ["PPG"], ["adu"], [ppg * 1000])
    feats = record_features(rec, "wearable")
    assert abs(feats["pulse_rate_bpm"] - 80) <= 3 and feats["ppg_quality_flag"] == "ok"
    assert feats["activity_quality_flag"] == "no_signal"
    assert feats["activity_quality_reason"] == "missing_channel:ACC"
    assert feats["quality_flag"] == "no_signal" and feats["quality_reason"] == "activity:missing_channel:ACC"


def test_ecg_record_with_invalid_run_and_flat_record(tmp_path):
    rec = _ecg_record(tmp_path, hr=70)
    d = wfdb.rdrecord(str(rec), physical=False)
    d.d_signal[:, :] = -32768  # every sample invalid
    d.wrsamp(write_dir=str(tmp_path))
    feats = record_features(rec, "ecg_monitor")
    assert feats["quality_flag"] == "no_signal" and "missing_samples" in feats["quality_reason"]
    flat = _write(tmp_path, "flat", 250, ["MLII", "V5"], ["mV", "mV"], [np.zeros(250 * 60), np.zeros(250 * 60)])
    assert record_features(flat, "ecg_monitor")["quality_flag"] == "no_signal"


def test_unknown_device_kind_names_record_and_kind(tmp_path):
    rec = _ecg_record(tmp_path)
    with pytest.raises(ValueError, match=r"ecg_250_mV.*'pacemaker'"):
        record_features(rec, "pacemaker")


def test_unreadable_record_raises_waveform_read_error(tmp_path):
    rec = _ecg_record(tmp_path)
    dat = rec.with_suffix(".dat")
    with open(dat, "r+b") as f:
        f.truncate(1001)
    with pytest.raises(WaveformReadError, match="ecg_250_mV"):
        record_features(rec, "ecg_monitor")


def test_real_bedside_records_as_ecg_monitor():
    a103l = record_features(BEDSIDE / "a103l", "ecg_monitor")  # II + V + PLETH, 250 Hz, asystole alarm
    assert a103l["n_channels"] == 3 and a103l["sampling_rate_hz"] == 250.0
    assert a103l["quality_flag"] in ("ok", "low_quality", "no_signal")
    # MIMIC 03700181: one lead (MCL1, QRS pointing down) at 4 samples per frame, plus ABP and RESP
    mimic = record_features(BEDSIDE / "03700181", "ecg_monitor")
    assert mimic["sampling_rate_hz"] == 500.0 and mimic["duration_s"] == pytest.approx(600.0)
    rec = read_record(BEDSIDE / "03700181", resample_to="fastest")
    cleaned = nk.ecg_clean(rec.signals["MCL1"], sampling_rate=500)
    reference = nk.ecg_findpeaks(cleaned, sampling_rate=500, method="pantompkins1985")["ECG_R_Peaks"]
    reference_hr = 60.0 / np.mean(np.diff(reference) / 500)  # an independent detector
    assert mimic["quality_flag"] == "ok" and abs(mimic["hr_mean_bpm"] - reference_hr) < 2


def _adversarial(n: int, seed: int) -> list[np.ndarray]:
    """Signals a broken device can deliver: NaN bursts, stuck values, spikes, rails, tiny lengths."""
    rng = np.random.default_rng(seed)
    base = np.sin(np.arange(n) / 7.0)
    bursts = base.copy()
    for start in rng.integers(0, n, 20):
        bursts[start : start + rng.integers(1, 400)] = np.nan
    stuck = base.copy()
    stuck[n // 3 :] = 0.123
    spikes = base.copy()
    spikes[rng.integers(0, n, 50)] = 1e4
    alternating = np.where(np.arange(n) % 2, np.nan, 1.0)
    return [bursts, stuck, spikes, alternating, np.clip(base * 50, -1, 1), base[:3], np.zeros(0), np.full(n, np.inf)]


@pytest.mark.parametrize("seed", [0, 1])
def test_features_flag_garbage_instead_of_raising(seed):
    from twin_pipeline.lib.ecg import ecg_features
    from twin_pipeline.lib.ventilator import ventilator_features
    from twin_pipeline.lib.wearable import wearable_features

    for x in _adversarial(50 * 90, seed):
        ecg = ecg_features({"MLII": x, "V5": x[::-1].copy()}, 250)
        vent = ventilator_features(x[::-1].copy(), x, 50)
        wear = wearable_features(x, x, 50)
        for feats in (ecg, vent, wear):
            assert feats["quality_flag"] in ("ok", "low_quality", "no_signal")
            assert isinstance(feats["quality_reason"], str)
            assert feats["quality_flag"] == "ok" or feats["quality_reason"] != ""
