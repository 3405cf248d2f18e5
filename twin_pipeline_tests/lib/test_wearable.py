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


def test_activity_count_features_minutes_and_cut_points():
    from twin_pipeline.lib.wearable import activity_count_features

    # 15-s epochs: minute 1 = 4×10 counts (40 cpm, sedentary), minute 2 = 4×600 (2400 cpm, MVPA),
    # minute 3 = non-wear (NaN) → not valid
    counts = np.r_[np.full(4, 10.0), np.full(4, 600.0), np.full(4, np.nan)]
    out = activity_count_features(counts, 15.0)
    assert out["activity_counts_per_min"] == pytest.approx((40 + 2400) / 2)
    assert out["sedentary_fraction"] == 0.5 and out["active_minutes"] == 1
    assert out["quality_flag"] == "low_quality" and out["quality_reason"] == "nonwear_or_missing"
    none = activity_count_features(np.full(8, np.nan), 15.0)
    assert none["quality_flag"] == "no_signal" and none["quality_reason"] == "no_valid_minutes"


def test_heart_rate_series_resting_hr_prefers_rest_minutes():
    from twin_pipeline.lib.wearable import heart_rate_series_features

    t = np.arange(0, 30 * 60, 10.0)  # 30 min, a reading every 10 s
    bpm = np.where(t < 15 * 60, 60.0, 110.0)
    bpm[5] = 400.0  # artefact, dropped
    out = heart_rate_series_features(t, bpm, rest_minutes=np.arange(15, 30))
    assert out["resting_hr_bpm"] == pytest.approx(110.0) and out["hr_minutes"] == 30
    assert heart_rate_series_features(t, bpm)["resting_hr_bpm"] == pytest.approx(60.0)
    assert heart_rate_series_features(t[:20], bpm[:20])["quality_reason"] == "few_hr_minutes"


def test_fitbit_features_on_real_exports():
    from pathlib import Path

    from twin_pipeline.lib.wearable import fitbit_features
    from twin_pipeline.sources.fitbit import read_fitbit_heart_rate, read_fitbit_minutes

    w = Path(__file__).resolve().parents[3] / "shared" / "data" / "wearable" / "fitbit"
    hr = read_fitbit_heart_rate(w / "heart_rate-1995-06-24.json")
    steps = read_fitbit_minutes(w / "steps-1995-06-23_Fitbit.json")
    out = fitbit_features(hr, steps)
    assert 55 < out["resting_hr_bpm"] < out["pulse_rate_bpm"] < 100
    assert 0 < out["sedentary_fraction"] < 1 and out["quality_flag"] == "ok"
    assert out["steps_per_day"] == pytest.approx(607 / (36 / 1440))
    only_hr = fitbit_features(hr, None)
    assert only_hr["quality_flag"] == "ok" and only_hr["activity_quality_reason"] == "no_steps_export"


def test_minute_with_beats_in_only_part_of_it_is_low_beat_coverage():
    ppg = _ppg(70, duration=60, seed=1)
    t = np.arange(len(ppg)) / FS
    slow = np.sin(2 * np.pi * 0.2 * t) * ppg.std() + ppg.mean()  # 5-s "beats": rejected as implausible IBIs
    x = np.r_[ppg[: 25 * FS], slow[25 * FS :]]  # beats cover 25 of 60 s (< 50 %)
    minutes = ppg_minutes(x, FS)
    assert minutes.loc[0, "reason"] == "low_beat_coverage" and not minutes.loc[0, "usable"]
    assert ppg_minutes(ppg, FS).loc[0, "usable"]


def test_ppg_record_shorter_than_20_s_is_too_short():
    minutes = ppg_minutes(_ppg(80, duration=15), FS)
    assert minutes["reason"].tolist() == ["too_short"]
    assert ppg_features(_ppg(80, duration=15), FS)["quality_reason"] == "too_shortx1"


def _acc_xyz(minute_levels_g: list[float], fs: int = FS) -> np.ndarray:
    """Triaxial acceleration (g): gravity on a tilted axis pair, per-minute movement added to x."""
    mag = _acc(minute_levels_g, fs)
    return np.column_stack([mag * 0.6, np.zeros_like(mag), mag * 0.8])  # |a| = mag


def test_raw_accelerometer_features_activity_and_resting_hr():
    from twin_pipeline.lib.wearable import raw_accelerometer_features

    acc = _acc_xyz([0.0, 0.0, 0.4, 0.4, 0.0])  # minutes 2-3 active
    t = np.arange(0, 300, 15.0)  # an HR reading every 15 s
    bpm = np.where((t >= 120) & (t < 240), 110.0, 58.0)
    out = raw_accelerometer_features(acc, FS, hr_time_s=t, hr_bpm=bpm)
    assert set(WEARABLE_FEATURE_KEYS) <= set(out)
    assert out["active_minutes"] == 2 and out["sedentary_fraction"] == pytest.approx(3 / 5)
    assert out["resting_hr_bpm"] == pytest.approx(58.0)  # only sedentary minutes
    assert out["pulse_rate_bpm"] == pytest.approx((3 * 58 + 2 * 110) / 5) and out["hr_minutes"] == 5
    assert out["quality_flag"] == "low_quality" and out["quality_reason"] == "hr:few_hr_minutes"  # 5 < 10 minutes


def test_raw_accelerometer_features_without_hr_and_with_reader_notes():
    from twin_pipeline.lib.wearable import raw_accelerometer_features

    acc = _acc_xyz([0.0, 0.3])
    plain = raw_accelerometer_features(acc, FS)
    assert plain["quality_flag"] == "ok" and plain["ppg_quality_reason"] == "no_ppg_in_export"
    assert plain["ppg_quality_flag"] == "no_signal" and np.isnan(plain["resting_hr_bpm"])
    cut = raw_accelerometer_features(acc, FS, notes=("truncated_file",))
    assert cut["activity_quality_flag"] == "low_quality" and cut["quality_reason"] == "activity:truncated_file"
    assert cut["active_minutes"] == plain["active_minutes"] == 1
    gap = acc.copy()
    gap[: 2 * 60 * FS - 10 * FS] = np.nan  # only 10 s of the second minute: no valid minute → no_signal
    assert raw_accelerometer_features(gap, FS)["quality_flag"] == "no_signal"
