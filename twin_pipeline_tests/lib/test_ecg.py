"""ECG peaks and features: accuracy on simulated and MIT-BIH data, and flags instead of crashes."""

from __future__ import annotations

from pathlib import Path

import neurokit2 as nk
import numpy as np
import pytest
import wfdb

from twin_pipeline.lib.ecg import ECG_FEATURE_KEYS, ecg_features, ecg_peaks, signal_template_quality
from twin_pipeline.sources.wfdb_io import read_record

MITDB = Path(__file__).resolve().parents[3] / "shared" / "data" / "ecg" / "mitdb"
BEAT_SYMBOLS = list("NLRBAaJSVrFejnE/fQ?")


def _sim(hr: float, duration: float = 120, fs: int = 250, seed: int = 1) -> np.ndarray:
    return nk.ecg_simulate(duration=duration, sampling_rate=fs, heart_rate=hr, method="simple", random_state=seed)


def _match_f1(ref: np.ndarray, det: np.ndarray, fs: float, tol_s: float = 0.15) -> tuple[float, float, float]:
    """Sensitivity, positive predictivity, F1 with one-to-one matching inside ±tol_s."""
    tol = int(round(tol_s * fs))
    det = np.sort(det)
    used = np.zeros(len(det), dtype=bool)
    tp = 0
    for r in ref:
        i = np.searchsorted(det, r - tol)
        while i < len(det) and det[i] <= r + tol:
            if not used[i]:
                used[i] = True
                tp += 1
                break
            i += 1
    se, pp = tp / len(ref), tp / max(len(det), 1)
    return se, pp, 2 * se * pp / (se + pp)


@pytest.mark.parametrize("hr", [50, 72, 120])
def test_simulated_heart_rate_within_2_bpm(hr):
    feats = ecg_features({"MLII": _sim(hr), "V5": 0.6 * _sim(hr, seed=2)}, 250)
    assert list(feats) == list(ECG_FEATURE_KEYS)
    assert abs(feats["hr_mean_bpm"] - hr) <= 2
    assert feats["quality_flag"] == "ok" and feats["quality_reason"] == ""
    assert feats["usable_fraction"] == 1.0 and feats["ecg_quality"] > 0.9
    assert abs(feats["n_beats"] - hr * 2) <= 3  # 2 minutes
    assert feats["hrv_sdnn_ms"] < 20 and feats["irregular_rr_fraction"] < 0.05


def test_mitdb_100s_peaks_match_reference_annotations():
    rec = read_record(MITDB / "100s")
    ann = wfdb.rdann(str(MITDB / "100s"), "atr")
    ref = ann.sample[np.isin(ann.symbol, BEAT_SYMBOLS)]
    peaks = ecg_peaks(rec.signals["MLII"], rec.sampling_rate)
    se, pp, f1 = _match_f1(ref, peaks, rec.sampling_rate)
    assert f1 > 0.98, (se, pp, f1)


def test_mitdb_100_full_record_windows_agree_with_annotations():
    rec = read_record(MITDB / "100")
    ann = wfdb.rdann(str(MITDB / "100"), "atr")
    ref = ann.sample[np.isin(ann.symbol, BEAT_SYMBOLS)]
    feats = ecg_features(rec.signals, rec.sampling_rate, window_s=300)  # 6 windows of 5 min
    assert feats["quality_flag"] == "ok"
    assert abs(feats["n_beats"] - len(ref)) <= 0.01 * len(ref)
    ref_hr = 60.0 / np.mean(np.diff(ref) / rec.sampling_rate)
    assert abs(feats["hr_mean_bpm"] - ref_hr) < 1.0
    one_window = ecg_features(rec.signals, rec.sampling_rate, window_s=3600)
    assert abs(one_window["hr_mean_bpm"] - feats["hr_mean_bpm"]) < 0.2


def test_flat_line_is_flagged_not_raised():
    feats = ecg_features({"MLII": np.full(250 * 60, 0.2), "V5": np.zeros(250 * 60)}, 250)
    assert feats["quality_flag"] == "no_signal" and "flat_line" in feats["quality_reason"]
    assert feats["n_beats"] == 0 and np.isnan(feats["hr_mean_bpm"]) and feats["usable_fraction"] == 0.0


def test_all_nan_is_flagged_not_raised():
    feats = ecg_features(np.full((250 * 60, 2), np.nan), 250)
    assert feats["quality_flag"] == "no_signal" and "missing_samples" in feats["quality_reason"]
    assert all(np.isnan(feats[k]) for k in ("hr_mean_bpm", "hrv_sdnn_ms", "ecg_quality"))


def test_short_and_empty_records_are_flagged():
    short = ecg_features(_sim(70, duration=2), 250)
    assert short["quality_flag"] == "no_signal" and short["quality_reason"] == "too_short"
    empty = ecg_features(np.zeros(0), 250)
    assert empty["quality_flag"] == "no_signal"


def test_invalid_run_excludes_its_window_and_keeps_the_rest(tmp_path):
    x = _sim(80, duration=120)
    sig = np.column_stack([x, x])
    wfdb.wrsamp("gap", fs=250, units=["mV", "mV"], sig_name=["MLII", "V5"], p_signal=sig, fmt=["16", "16"],
                write_dir=str(tmp_path))
    d = wfdb.rdrecord(str(tmp_path / "gap"), physical=False)
    d.d_signal[: 250 * 40, :] = -32768  # first 40 s invalid on both leads
    d.wrsamp(write_dir=str(tmp_path))
    rec = read_record(tmp_path / "gap")
    feats = ecg_features(rec.signals, rec.sampling_rate, window_s=30)  # 4 windows of 30 s
    # window 1 lost; window 2 usable with its 20 finite seconds; windows 3, 4 whole: 80 s of 120 s
    assert feats["usable_fraction"] == pytest.approx(80 / 120, abs=0.01)
    assert feats["quality_flag"] == "ok"
    assert abs(feats["hr_mean_bpm"] - 80) <= 2
    assert feats["n_beats"] == pytest.approx(80 * 80 / 60, abs=3)  # 80 s of finite signal


def test_short_invalid_run_inside_a_window_breaks_rr_not_features():
    x = _sim(75, duration=60)
    x[5000:5100] = np.nan  # 0.4 s dropout
    feats = ecg_features(x, 250)
    assert feats["quality_flag"] == "ok" and abs(feats["hr_mean_bpm"] - 75) <= 2
    assert feats["hrv_sdnn_ms"] < 30  # no RR interval spans the dropout


def test_second_lead_used_when_first_is_off():
    x = _sim(64)
    feats = ecg_features({"MLII": np.zeros_like(x), "V5": x}, 250)
    assert feats["quality_flag"] == "ok" and abs(feats["hr_mean_bpm"] - 64) <= 2


def test_inverted_lead_is_detected():
    feats = ecg_features(-_sim(88), 250)  # QRS pointing down (e.g. an MCL1 or aVR lead)
    assert feats["quality_flag"] == "ok" and abs(feats["hr_mean_bpm"] - 88) <= 2


def test_saturated_lead_is_excluded():
    x = np.clip(_sim(70) * 20, -1.0, 1.0)  # clipped amplifier / lead-off rail
    feats = ecg_features(x, 250)
    assert feats["quality_flag"] == "no_signal" and "saturated" in feats["quality_reason"]


def test_noise_only_is_not_ok():
    noise = np.random.default_rng(0).normal(0, 1.0, 250 * 120)
    feats = ecg_features(noise, 250)
    assert feats["quality_flag"] != "ok"


def test_template_quality_separates_clean_from_noisy():
    x = _sim(70, duration=30)
    peaks = ecg_peaks(x, 250)
    noisy = x + np.random.default_rng(1).normal(0, 2 * x.std(), len(x))
    assert signal_template_quality(x, peaks, 250) > 0.95
    assert signal_template_quality(noisy, peaks, 250) < 0.8
    assert np.isnan(signal_template_quality(x, peaks[:2], 250))


def _record_f1(name: str, peaks_fn) -> float:
    rec = wfdb.rdrecord(str(MITDB / name))
    ann = wfdb.rdann(str(MITDB / name), "atr")
    ref = ann.sample[np.isin(ann.symbol, BEAT_SYMBOLS)]
    return _match_f1(ref, peaks_fn(rec.p_signal, rec.fs), rec.fs)[2]


def test_fused_leads_beat_neurokit_on_hard_record_108():
    """108: big P waves and noise on MLII; fusing V5 by template SQI recovers it."""
    from twin_pipeline.lib.ecg import ecg_peaks_leads

    fused = _record_f1("108", lambda x, fs: ecg_peaks_leads(x, fs))
    nk_lead0 = _record_f1("108", lambda x, fs: ecg_peaks(x[:, 0], fs))
    assert fused >= 0.98 and fused > nk_lead0 + 0.05, (fused, nk_lead0)


def test_fused_leads_survive_nan_gap_and_dead_lead():
    from twin_pipeline.lib.ecg import ecg_peaks_leads

    fs = 250
    a, b = _sim(70, duration=60, seed=4), 0.5 * _sim(70, duration=60, seed=4)
    a[20 * fs : 30 * fs] = np.nan  # primary lead off for 10 s: the other lead carries the beats
    peaks = ecg_peaks_leads([a, b], fs)
    assert abs(len(peaks) - 70) <= 2
    assert np.sum((peaks >= 20 * fs) & (peaks < 30 * fs)) >= 10
    only_nan = ecg_peaks_leads([np.full(fs * 10, np.nan), np.full(fs * 10, np.nan)], fs)
    assert len(only_nan) == 0
    # a flat second lead gets no weight
    assert abs(len(ecg_peaks_leads([b, np.zeros_like(b)], fs)) - 70) <= 2


def test_twin_method_single_lead_inverted_qrs():
    from twin_pipeline.lib.ecg import ecg_peaks_leads

    x = _sim(80, duration=60, seed=5)
    assert abs(len(ecg_peaks_leads([-x], 250)) - 80) <= 2
    assert abs(len(ecg_peaks(-x, 250, method="twin")) - 80) <= 2
