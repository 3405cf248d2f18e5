"""Wearable: PPG pulse rate and quality, activity from acceleration, resting heart rate."""

from __future__ import annotations

from pathlib import Path

import neurokit2 as nk
import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib.wearable import (
    ACTIVITY_FEATURE_KEYS,
    PPG_FEATURE_KEYS,
    WEARABLE_FEATURE_KEYS,
    activity_features,
    ppg_features,
    ppg_minutes,
    wearable_features,
)

PPG_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "wearable" / "ppg"
FS = 50


def _ppg(hr: float, duration: float = 120, fs: int = FS, seed: int = 4) -> np.ndarray:
    return nk.ppg_simulate(duration=duration, sampling_rate=fs, heart_rate=hr, random_state=seed)


def _acc(minute_levels_g: list[float], fs: int = FS, seed: int = 5) -> np.ndarray:
    """Acceleration magnitude (g, with gravity): per minute 1 g + |sinusoid| of the given amplitude + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(60 * fs)) / fs
    parts = [1.0 + amp * np.abs(np.sin(2 * np.pi * 1.0 * t)) + rng.normal(0, 0.003, len(t)) for amp in minute_levels_g]
    return np.concatenate(parts)


@pytest.mark.parametrize("hr", [55, 80, 115])
def test_simulated_ppg_pulse_rate_within_3_bpm(hr):
    feats = ppg_features(_ppg(hr), FS)
    assert list(feats) == list(PPG_FEATURE_KEYS)
    assert abs(feats["pulse_rate_bpm"] - hr) <= 3
    assert feats["quality_flag"] == "ok" and feats["ppg_quality"] > 0.86
    assert 0 < feats["prv_sdnn_ms"] < 200


@pytest.mark.parametrize(
    "signal, reason",
    [(np.full(FS * 120, np.nan), "missing_samples"), (np.full(FS * 120, 512.0), "flat_line"), (np.zeros(FS * 5), "")],
)
def test_unusable_ppg_is_flagged_not_raised(signal, reason):
    feats = ppg_features(signal, FS)
    assert feats["quality_flag"] == "no_signal" and reason in feats["quality_reason"]
    assert np.isnan(feats["pulse_rate_bpm"])


def test_noise_only_ppg_is_not_ok():
    feats = ppg_features(np.random.default_rng(2).normal(0, 1, FS * 120), FS)
    assert feats["quality_flag"] != "ok"


def test_ppg_minutes_skip_a_dropout_minute():
    x = _ppg(70, duration=180)
    x[FS * 60 : FS * 115] = np.nan  # most of minute 2 lost
    minutes = ppg_minutes(x, FS)
    assert minutes["usable"].tolist() == [True, False, True]
    assert minutes.loc[1, "reason"] == "missing_samples"
    feats = ppg_features(x, FS)
    assert feats["quality_flag"] == "ok" and abs(feats["pulse_rate_bpm"] - 70) <= 3


def test_activity_minutes_counted_against_cut_points():
    # ENMO per minute ≈ amplitude · 2/π: 0 → sedentary, 0.3 g → ~191 mg active, 0.05 g → ~32 mg sedentary
    acc = _acc([0.0, 0.3, 0.05, 0.3, 0.0])
    feats = activity_features(acc, FS)
    assert list(feats) == list(ACTIVITY_FEATURE_KEYS)
    assert feats["active_minutes"] == 2
    assert feats["sedentary_fraction"] == pytest.approx(3 / 5)
    expected = np.mean([0, 300 * 2 / np.pi, 50 * 2 / np.pi, 300 * 2 / np.pi, 0])
    assert feats["activity_counts_per_min"] == pytest.approx(expected, rel=0.05)
    assert feats["quality_flag"] == "ok"


def test_activity_without_gravity_component():
    acc = _acc([0.0, 0.3, 0.0]) - 1.0  # a device that already removed gravity
    feats = activity_features(acc, FS)
    assert feats["active_minutes"] == 1 and feats["sedentary_fraction"] == pytest.approx(2 / 3)


def test_activity_unusable_inputs_are_flagged():
    assert activity_features(np.full(FS * 120, np.nan), FS)["quality_flag"] == "no_signal"
    flat = activity_features(np.full(FS * 120, 1.0), FS)
    assert flat["quality_flag"] == "low_quality" and "flat_signal" in flat["quality_reason"]


def test_resting_hr_uses_sedentary_minutes_only():
    # minutes 0-2 at rest with HR 62, minutes 3-4 active with HR 105
    ppg = np.concatenate([_ppg(62, duration=180, seed=1), _ppg(105, duration=120, seed=2)])
    acc = _acc([0.0, 0.0, 0.0, 0.4, 0.4])
    feats = wearable_features(ppg, acc, FS)
    assert list(feats) == list(WEARABLE_FEATURE_KEYS)
    assert abs(feats["resting_hr_bpm"] - 62) <= 3
    assert 70 < feats["pulse_rate_bpm"] < 100  # all usable minutes
    assert feats["active_minutes"] == 2
    assert feats["quality_flag"] == "ok" and feats["quality_reason"] == ""
    assert feats["ppg_quality_flag"] == "ok" and feats["activity_quality_flag"] == "ok"


def test_wearable_quality_is_the_worse_stream():
    feats = wearable_features(_ppg(70), np.full(FS * 120, np.nan), FS)
    assert feats["ppg_quality_flag"] == "ok" and feats["activity_quality_flag"] == "no_signal"
    assert feats["quality_flag"] == "no_signal" and feats["quality_reason"].startswith("activity:")
    assert np.isnan(feats["resting_hr_bpm"])  # no sedentary minute known


def test_real_ppg_in_the_wild_recording():
    """heartpy's 11-minute 100 Hz 'in the wild' PPG: every full minute usable, plausible rate."""
    x = pd.read_csv(PPG_DATA / "data3.csv")["hr"].to_numpy(dtype=float)
    minutes = ppg_minutes(x, 100.0)
    assert minutes["usable"].sum() >= 10
    feats = ppg_features(x, 100.0)
    assert feats["quality_flag"] == "ok" and 50 < feats["pulse_rate_bpm"] < 140
