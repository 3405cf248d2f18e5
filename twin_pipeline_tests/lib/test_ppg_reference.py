"""ppg_features on the real heartpy PPG recordings against neurokit2 `ppg_process` (the reference).

Full table (all four files, bedside PLETH, a second detector, speed): benchmarks/ppg_pulse_rate.py.
"""

from __future__ import annotations

import warnings

import neurokit2 as nk
import numpy as np
import pytest

from twin_pipeline.lib.wearable import ppg_features, ppg_minutes
from twin_pipeline.sources.ppg_csv import read_signal_csv
from twin_pipeline_tests.conftest import shared_data


@pytest.mark.parametrize(("name", "rate"), [("data.csv", 100.0), ("data3.csv", None)])
def test_clean_recordings_match_neurokit2_ppg_process(name, rate):
    """Clean finger PPG (25 s; 11 min "in the wild"): every minute usable, and the record rate within
    1 bpm of the mean of neurokit2's PPG_Rate. Both use Elgendi peaks on the same cleaned signal, so
    on a clean trace they find the same beats; 1 bpm leaves room for a beat or two that our per-minute
    windows or artefact rules treat differently (measured: 0.0 and 0.3 bpm)."""
    x, fs = read_signal_csv(shared_data("wearable", "ppg", name), rate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals, _ = nk.ppg_process(x, sampling_rate=fs)
    reference = float(signals["PPG_Rate"].mean())
    feats = ppg_features(x, fs)
    assert ppg_minutes(x, fs)["usable"].all()
    assert feats["quality_flag"] == "ok" and abs(feats["pulse_rate_bpm"] - reference) <= 1.0


def test_noisy_ring_minutes_with_few_beats_are_left_out():
    """Smart-ring PPG (32 Hz, 48 min, motion and gaps): minutes whose accepted beats cover < 50 % of
    the minute are excluded (low_beat_coverage), so the record rate is carried by the minutes with a
    steady rhythm, which sit at ~95–108 bpm; neurokit2's mean rate over all detected beats is pulled
    down by missed beats (~75–81 bpm, see the benchmark)."""
    x, fs = read_signal_csv(shared_data("wearable", "ppg", "ring_data.csv"), 32.0)
    minutes = ppg_minutes(x, fs)
    assert (minutes["reason"] == "low_beat_coverage").sum() >= 10
    usable = minutes[minutes["usable"]]
    assert len(usable) >= 24
    rates = np.array([60000.0 / np.mean(ibi) for ibi in usable["ibi_ms"]])
    assert np.percentile(rates, 10) > 85  # no half-rate minute (≈ 50–60 bpm) left among the usable ones
    assert 90 < ppg_features(x, fs)["pulse_rate_bpm"] < 110
