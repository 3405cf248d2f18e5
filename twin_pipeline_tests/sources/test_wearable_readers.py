"""Fitbit JSON, ActiGraph/Actiwatch count CSV and one-signal CSV readers on the real exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.sources.accelerometer import read_activity_counts
from twin_pipeline.sources.fitbit import read_fitbit_heart_rate, read_fitbit_minutes, read_fitbit_sleep
from twin_pipeline.sources.ppg_csv import read_signal_csv
from twin_pipeline.sources.wfdb_io import WaveformReadError

W = Path(__file__).resolve().parents[3] / "shared" / "data" / "wearable"


def test_fitbit_heart_rate_export():
    df = read_fitbit_heart_rate(W / "fitbit" / "heart_rate-1995-06-24.json")
    assert len(df) == 201 and df["time"].is_monotonic_increasing
    assert df["time"].iloc[0] == pd.Timestamp("1995-06-24 16:00:10")
    assert df["bpm"].between(40, 200).all() and set(df["confidence"].dropna()) <= {0, 1, 2, 3}


def test_fitbit_minute_exports_and_sleep():
    steps = read_fitbit_minutes(W / "fitbit" / "steps-1995-06-23_Fitbit.json")
    assert len(steps) == 34 and steps["value"].sum() == 607 and (steps["time"].dt.second == 0).all()
    sleep = read_fitbit_sleep(W / "fitbit" / "sleep-1995-06-23_Fitbit.json")
    assert len(sleep) == 2 and (sleep["end"] > sleep["start"]).all()
    assert sleep["minutes_asleep"].iloc[0] == 236


def test_fitbit_wrong_or_broken_export_raises(tmp_path):
    with pytest.raises(WaveformReadError, match="not a heart-rate export"):
        read_fitbit_heart_rate(W / "fitbit" / "steps-1995-06-23_Fitbit.json")
    bad = tmp_path / "hr.json"
    bad.write_text('[{"dateTime": "06/24/95 16:00:10", "value": {"bpm": 70}')  # truncated
    with pytest.raises(WaveformReadError, match="hr.json"):
        read_fitbit_heart_rate(bad)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(WaveformReadError, match="JSON array"):
        read_fitbit_minutes(odd)


@pytest.mark.parametrize(("name", "epoch", "start", "n"), [
    ("ActiGraph13.csv", 15.0, "2013-08-26 09:00:00", 990),
    ("ActiGraph61.csv", 5.0, "2016-08-15 21:35:00", 990),
    ("Actiwatch.csv", 15.0, "2019-11-23 06:00:00", 860),
])
def test_count_exports(name, epoch, start, n):
    df = read_activity_counts(W / "accelerometer" / name)
    assert df.attrs["epoch_s"] == epoch and len(df) == n
    assert df["time"].iloc[0] == pd.Timestamp(start)
    assert (df["time"].diff().dropna() == pd.Timedelta(seconds=epoch)).all()
    finite = df["counts"].dropna()
    assert len(finite) > 50 and (finite >= 0).all()


def test_actiwatch_off_wrist_epochs_are_nan():
    df = read_activity_counts(W / "accelerometer" / "Actiwatch.csv")
    assert df["nonwear"].sum() == 797 and df.loc[df["nonwear"], "counts"].isna().all()
    assert df.loc[~df["nonwear"], "counts"].notna().all()


def test_actigraph_vector_magnitude():
    df = read_activity_counts(W / "accelerometer" / "ActiGraph61.csv")
    assert df["counts"].iloc[0] == 325 and df["counts_vm"].iloc[0] == pytest.approx(np.sqrt(325**2 + 85**2 + 176**2))


def test_raw_binaries_are_unsupported_and_unknown_csv_rejected(tmp_path):
    with pytest.raises(WaveformReadError, match="unsupported raw binary"):
        read_activity_counts(W / "accelerometer" / "ax3_testfile.cwa")
    other = tmp_path / "x.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(WaveformReadError, match="not an ActiGraph or Actiwatch"):
        read_activity_counts(other)


def test_signal_csv_layouts():
    x, fs = read_signal_csv(W / "ppg" / "data.csv", 100)
    assert len(x) == 2483 and fs == 100 and np.isfinite(x).all()
    x2, fs2 = read_signal_csv(W / "ppg" / "data2.csv")  # timer in ms
    assert len(x2) == 15000 and 110 < fs2 < 125
    x3, fs3 = read_signal_csv(W / "ppg" / "data3.csv")  # wall-clock timestamps with repeats
    assert len(x3) == 68476 and 95 < fs3 < 105
    ring, _ = read_signal_csv(W / "ppg" / "ring_data.csv", 32)
    assert np.isnan(ring).sum() > 0 and np.isfinite(ring).sum() > 80000


def test_signal_csv_needs_a_rate_for_a_bare_column_and_reads_samplerate_line(tmp_path):
    with pytest.raises(WaveformReadError, match="sampling rate must be given"):
        read_signal_csv(W / "ppg" / "data.csv")
    p = tmp_path / "lung.csv"
    p.write_text("#samplerate,133\npressure,flow\n5.0,\n6.5,\n,\n")
    x, fs = read_signal_csv(p, column="pressure")
    assert fs == 133 and x[:2].tolist() == [5.0, 6.5] and np.isnan(x[2])
