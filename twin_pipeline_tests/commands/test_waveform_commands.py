"""`twin-pipeline ecg-peaks` and `waveform-features` on real and simulated records."""

from __future__ import annotations

import json
from pathlib import Path

import neurokit2 as nk
import numpy as np
import wfdb

from twin_pipeline.cli import main

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
BEAT_SYMBOLS = list("NLRBAaJSVrFejnE/fQ?")


def test_ecg_peaks_writes_one_index_per_line_matching_annotations(tmp_path, capsys):
    out = tmp_path / "peaks" / "100s.txt"
    assert main(["ecg-peaks", str(DATA / "ecg" / "mitdb" / "100s"), "--out", str(out)]) == 0
    peaks = np.array([int(line) for line in out.read_text().splitlines()])
    ann = wfdb.rdann(str(DATA / "ecg" / "mitdb" / "100s"), "atr")
    ref = ann.sample[np.isin(ann.symbol, BEAT_SYMBOLS)]
    assert np.all(np.diff(peaks) > 0)
    hits = sum(np.min(np.abs(peaks - r)) <= 54 for r in ref)
    assert hits >= len(ref) - 1 and len(peaks) <= len(ref) + 1
    assert "R-peaks at 360 Hz" in capsys.readouterr().err


def test_ecg_peaks_unreadable_record_exits_2(tmp_path, capsys):
    assert main(["ecg-peaks", str(tmp_path / "nope"), "--out", str(tmp_path / "x.txt")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "x.txt").exists()


def test_waveform_features_infers_ecg_and_prints_json(tmp_path, capsys):
    ecg = nk.ecg_simulate(duration=60, sampling_rate=250, heart_rate=75, method="simple", random_state=3)
    wfdb.wrsamp("sim", fs=250, units=["mV"], sig_name=["MLII"], p_signal=ecg[:, None], fmt=["16"],
                write_dir=str(tmp_path))
    assert main(["waveform-features", str(tmp_path / "sim")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device_kind"] == "ecg_monitor" and out["quality_flag"] == "ok"
    assert abs(out["hr_mean_bpm"] - 75) < 2 and out["n_channels"] == 1


def test_waveform_features_on_pb840_export_uses_ventilator_markers(capsys):
    path = DATA / "ventilator" / "pb840" / "0149_2016-02-17-08-38-13_1.csv_test"
    assert main(["waveform-features", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device_kind"] == "ventilator" and out["n_breaths"] == 319
    assert abs(out["peep_cmh2o"] - 7.68) < 0.1 and abs(out["ie_ratio"] - 0.46) < 0.02  # ventMAP medians


def test_waveform_features_rejects_wrong_kind_for_pb840(capsys):
    path = DATA / "ventilator" / "pb840" / "ards-alone.csv.test"
    assert main(["waveform-features", str(path), "--device-kind", "wearable"]) == 1
    assert "PB-840" in capsys.readouterr().err
