"""Frequency-domain HRV (LF, HF, LF/HF): against neurokit2 `hrv_frequency` on the same peaks and
against the known power of synthetic NN oscillations; too-short NN series give NaN with a reason.

Tolerance 15 %: our spectrum (4 Hz cubic spline, bins summed × width) and neurokit2's (100 Hz
quadratic interpolation, trapezoid over the bins inside the band) differ by design; on these series
the measured difference is ≤ 4 % (the trapezoid drops about one 1/300-Hz bin ≈ 3 % of the LF band),
and the 3 ms beat jitter adds a few % of random power. neurokit2 is called with normalize=False:
by default it divides the PSD by its maximum, so its HRV_LF / HRV_HF are not in ms² (the ratio is).
"""

from __future__ import annotations

import warnings

import neurokit2 as nk
import numpy as np
import pytest
import wfdb

from twin_pipeline.lib.ecg import ECG_FEATURE_KEYS, ecg_features, ecg_peaks_leads, hrv_frequency
from twin_pipeline_tests.conftest import shared_data

LF_HZ, LF_AMP_MS = 0.10, 30.0  # sinusoid of amplitude A has power A² / 2
HF_HZ, HF_AMP_MS = 0.25, 20.0
TRUE_LF, TRUE_HF = LF_AMP_MS**2 / 2, HF_AMP_MS**2 / 2  # 450, 200 ms²


def _nn_peaks(duration_s: float, fs: float, seed: int = 0, base_ms: float = 900.0) -> np.ndarray:
    """Beat sample indices whose NN series oscillates at LF_HZ and HF_HZ (+ 3 ms white jitter)."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 2)
    t, out = 0.5, [int(0.5 * fs)]
    while t < duration_s - 1.5:
        rr = (base_ms + LF_AMP_MS * np.sin(2 * np.pi * LF_HZ * t + phase[0])
              + HF_AMP_MS * np.sin(2 * np.pi * HF_HZ * t + phase[1]) + rng.normal(0, 3.0))
        t += rr / 1000.0
        out.append(int(round(t * fs)))
    return np.asarray(out, dtype=np.int64)


def _ecg_from_peaks(peaks: np.ndarray, n: int, fs: float, seed: int = 0) -> np.ndarray:
    """A plain synthetic ECG (mV): P, QRS (R + S), T Gaussians at each peak, small noise."""
    t = np.arange(-0.3, 0.5, 1.0 / fs)
    beat = (0.1 * np.exp(-((t + 0.16) / 0.025) ** 2) + 1.2 * np.exp(-(t / 0.012) ** 2)
            - 0.3 * np.exp(-((t - 0.025) / 0.010) ** 2) + 0.3 * np.exp(-((t - 0.25) / 0.045) ** 2))
    x = np.random.default_rng(seed).normal(0, 0.01, n)
    idx = peaks[:, None] + np.round(t * fs).astype(np.int64)[None, :]
    ok = (idx >= 0) & (idx < n)
    np.add.at(x, idx[ok], np.broadcast_to(beat, idx.shape)[ok])
    return x


def _nk(peaks: np.ndarray, fs: float, normalize: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nk.hrv_frequency(peaks, sampling_rate=fs, normalize=normalize)


@pytest.mark.parametrize("seed", [0, 1])
def test_lf_hf_match_neurokit_and_known_power_on_5_min_nn(seed):
    peaks = _nn_peaks(300, 1000.0, seed=seed)
    ours = hrv_frequency(peaks, 1000.0)
    ref = _nk(peaks, 1000.0)
    assert ours["hrv_freq_reason"] == ""
    assert ours["hrv_lf_ms2"] == pytest.approx(float(ref["HRV_LF"].iloc[0]), rel=0.15)
    assert ours["hrv_hf_ms2"] == pytest.approx(float(ref["HRV_HF"].iloc[0]), rel=0.15)
    assert ours["hrv_lf_hf"] == pytest.approx(float(_nk(peaks, 1000.0, normalize=True)["HRV_LFHF"].iloc[0]), rel=0.15)
    assert ours["hrv_lf_ms2"] == pytest.approx(TRUE_LF, rel=0.15)
    assert ours["hrv_hf_ms2"] == pytest.approx(TRUE_HF, rel=0.15)
    assert ours["hrv_lf_hf"] == pytest.approx(TRUE_LF / TRUE_HF, rel=0.15)  # 2.25: LF dominates as built


def test_ecg_features_lf_hf_from_synthetic_ecg_match_neurokit_on_true_peaks():
    fs = 250.0
    peaks = _nn_peaks(305, fs, seed=3)
    n = int(305 * fs)
    x = _ecg_from_peaks(peaks, n, fs)
    feats = ecg_features({"MLII": x, "V5": 0.7 * _ecg_from_peaks(peaks, n, fs, seed=1)}, fs)
    assert list(feats) == list(ECG_FEATURE_KEYS)
    assert feats["quality_flag"] == "ok" and feats["hrv_freq_reason"] == ""
    ref = _nk(peaks, fs)
    assert feats["hrv_lf_ms2"] == pytest.approx(float(ref["HRV_LF"].iloc[0]), rel=0.15)
    assert feats["hrv_hf_ms2"] == pytest.approx(float(ref["HRV_HF"].iloc[0]), rel=0.15)
    assert feats["hrv_lf_hf"] == pytest.approx(float(ref["HRV_LF"].iloc[0] / ref["HRV_HF"].iloc[0]), rel=0.15)


def test_nn_run_continues_across_windows_when_the_best_lead_switches():
    """Method "twin" fuses both leads in every window: the NN series is not cut at a window whose
    better lead differs from the previous window's, so 1-min windows still give a 5-min spectrum."""
    fs = 250.0
    peaks = _nn_peaks(305, fs, seed=4)
    n = int(305 * fs)
    a, b = _ecg_from_peaks(peaks, n, fs), _ecg_from_peaks(peaks, n, fs, seed=2)
    rng = np.random.default_rng(5)
    minute = int(60 * fs)
    for k in range(6):  # alternate which lead carries 0.3 mV of noise, minute by minute
        seg = slice(k * minute, min(n, (k + 1) * minute))
        (a if k % 2 else b)[seg] += rng.normal(0, 0.3, seg.stop - seg.start)
    feats = ecg_features({"MLII": a, "V5": b}, fs, window_s=60)
    assert feats["quality_flag"] == "ok" and feats["hrv_freq_reason"] == "", feats["quality_reason"]
    ref = _nk(peaks, fs)
    assert feats["hrv_lf_ms2"] == pytest.approx(float(ref["HRV_LF"].iloc[0]), rel=0.15)


def test_too_short_nn_series_gives_nan_with_reason():
    fs = 250.0
    peaks = _nn_peaks(90, fs)
    out = hrv_frequency(peaks, fs)
    assert out["hrv_freq_reason"] == "nn_too_short"
    assert all(np.isnan(out[k]) for k in ("hrv_lf_ms2", "hrv_hf_ms2", "hrv_lf_hf"))
    # the record's other features are unaffected: a 90-s record is still "ok"
    feats = ecg_features(_ecg_from_peaks(peaks, int(90 * fs), fs), fs)
    assert feats["quality_flag"] == "ok" and feats["quality_reason"] == ""
    assert feats["hrv_freq_reason"] == "nn_too_short" and np.isnan(feats["hrv_lf_ms2"])
    assert np.isfinite(feats["hrv_rmssd_ms"])


def test_an_invalid_interval_splits_the_nn_series():
    fs = 1000.0
    first = _nn_peaks(100, fs, seed=0)
    second = first[-1] + 4000 + _nn_peaks(100, fs, seed=1)  # a 4-s pause: not an NN interval
    peaks = np.concatenate([first, second])
    assert (np.diff(peaks) / fs).sum() > 200  # 200 s in all, but no run of 120 s
    assert hrv_frequency(peaks, fs)["hrv_freq_reason"] == "nn_too_short"
    valid = np.ones(len(peaks) - 1, dtype=bool)
    with pytest.raises(ValueError, match="one entry per interval"):
        hrv_frequency(peaks, fs, valid=valid[:-1])
    assert hrv_frequency(peaks[:2], fs)["hrv_freq_reason"] == "no_nn"


def test_no_signal_record_has_no_spectrum():
    feats = ecg_features(np.zeros((250 * 200, 2)), 250)
    assert feats["quality_flag"] == "no_signal" and feats["hrv_freq_reason"] == "no_nn"
    assert np.isnan(feats["hrv_lf_hf"])


def test_mitdb_100_lf_hf_close_to_neurokit_over_the_same_5_min_windows():
    path = shared_data("ecg", "mitdb", "100.dat").with_suffix("")
    rec = wfdb.rdrecord(str(path))
    x, fs = rec.p_signal, float(rec.fs)
    feats = ecg_features({"MLII": x[:, 0], "V5": x[:, 1]}, fs, window_s=300)
    assert feats["hrv_freq_reason"] == ""
    peaks = ecg_peaks_leads(x, fs)
    w = int(300 * fs)
    ref = [_nk(peaks[(peaks >= a) & (peaks < a + w)] - a, fs) for a in range(0, len(x) - w + 1, w)]
    lf = float(np.mean([r["HRV_LF"].iloc[0] for r in ref]))
    hf = float(np.mean([r["HRV_HF"].iloc[0] for r in ref]))
    assert feats["hrv_lf_ms2"] == pytest.approx(lf, rel=0.15)
    assert feats["hrv_hf_ms2"] == pytest.approx(hf, rel=0.15)
