"""The synthetic signals carry the ground truth they claim (checked with NeuroKit2 / integration)."""

from __future__ import annotations

import datetime as dt

import neurokit2 as nk
import numpy as np
import pytest
import wfdb

from twin_pipeline.synth.waveforms import (ecg_synthesize, ventilator_synthesize,
                                           waveform_write, wearable_synthesize)


@pytest.mark.parametrize("heart_rate,sampling_rate", [(58.0, 250), (95.0, 500), (120.0, 360)])
def test_ecg_true_rate_matches_detected_r_peaks(heart_rate, sampling_rate):
    sig, true_rate = ecg_synthesize(30.0, sampling_rate, heart_rate, np.random.default_rng(1))
    assert sig.shape == (30 * sampling_rate, 2)
    assert abs(true_rate - heart_rate) < 3
    peaks = nk.ecg_peaks(nk.ecg_clean(sig[:, 0], sampling_rate=sampling_rate),
                         sampling_rate=sampling_rate)[1]["ECG_R_Peaks"]
    detected = 60.0 * sampling_rate / np.mean(np.diff(peaks))
    assert abs(detected - true_rate) < 1.0
    assert 0.6 < np.percentile(sig[:, 0], 99.9) < 1.6  # R amplitude in mV


@pytest.mark.parametrize("mode", ["volume", "pressure"])
def test_ventilator_rate_tidal_volume_and_peep_are_recoverable(mode):
    fs, rr, vt, peep = 50, 18.0, 450.0, 8.0
    sig = ventilator_synthesize(120.0, fs, rr_bpm=rr, tidal_volume_ml=vt, peep_cmh2o=peep,
                                compliance_ml_cmh2o=40.0, resistance_cmh2o_l_s=10.0, mode=mode,
                                rng=np.random.default_rng(2))
    paw, flow = sig[:, 0], sig[:, 1]
    # a breath starts with a step up in flow (both modes); noise steps are < 3 L/min
    onsets = np.flatnonzero((np.diff(flow) > 12.0) & (flow[1:] > 12.0)) + 1
    assert abs(60.0 * fs / np.mean(np.diff(onsets)) - rr) < 1.0
    volumes = [flow[a:b][flow[a:b] > 0].sum() / 60.0 / fs * 1000.0  # L/min -> mL
               for a, b in zip(onsets[:-1], onsets[1:])]
    assert abs(np.median(volumes) - vt) < 0.08 * vt
    assert abs(np.median(paw[flow < -1.0]) - peep) < 0.5
    assert paw.max() > peep + vt / 40.0  # plateau above PEEP by at least VT / compliance


def test_wearable_bouts_raise_acceleration_and_rest_rate_is_true():
    fs = 50
    sig, bouts = wearable_synthesize(600.0, fs, resting_hr=66.0, rng=np.random.default_rng(3))
    assert 1 <= len(bouts) <= 3
    acc = sig[:, 1]
    active = np.zeros(len(acc), dtype=bool)
    for a, b in bouts:
        active[int(a * fs):int(b * fs)] = True
    assert acc[active].std() > 5 * acc[~active].std()
    rest = slice(0, int(bouts[0][0] * fs))
    peaks = nk.ppg_findpeaks(nk.ppg_clean(sig[rest, 0], sampling_rate=fs),
                             sampling_rate=fs)["PPG_Peaks"]
    assert abs(60.0 * fs / np.median(np.diff(peaks)) - 66.0) < 4.0


def test_waveform_write_stores_nan_as_invalid_and_keeps_units(tmp_path):
    sig, _ = ecg_synthesize(5.0, 250, 70.0, np.random.default_rng(4))
    sig[100:150, :] = np.nan
    start = dt.datetime(2026, 7, 1, 9, 30, 5)
    waveform_write("ecg_123_20260701", "ecg_monitor", sig, 250, start, ["patient: X"], tmp_path)
    raw = np.fromfile(tmp_path / "ecg_123_20260701.dat", dtype="<i2").reshape(-1, 2)
    assert (raw[100:150] == -32768).all() and (raw[:100] != -32768).all()
    rec = wfdb.rdrecord(str(tmp_path / "ecg_123_20260701"))
    assert rec.units == ["mV", "mV"] and rec.base_time == start.time()
    assert np.isnan(rec.p_signal[100:150]).all()
    assert np.allclose(rec.p_signal[:100], sig[:100], atol=0.005)
