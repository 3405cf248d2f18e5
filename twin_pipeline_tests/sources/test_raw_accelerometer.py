"""Raw accelerometer binaries: Axivity .cwa, GENEActiv .bin (actfast) and Matrix .BIN (own reader)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin_pipeline.lib.waveform import feature_columns, file_features
from twin_pipeline.sources.raw_accelerometer import read_raw_accelerometer, resample_uniform
from twin_pipeline.sources.wfdb_io import WaveformReadError
from twin_pipeline_tests.conftest import shared_data

# Gravity: a still or slowly moving wrist sensor reads |a| ≈ 1 g. These files are not
# auto-calibrated (GGIR's calibration corrects offset/gain errors of this size); their medians sit
# 0.957 (AX3), 1.007 (GENEActiv) and 0.976 g (Matrix). ±0.1 g is twice the largest of those errors and
# still catches the mistakes that matter (wrong range scaling ×2 or ×0.5, gravity removed, wrong axes).
GRAVITY_TOL_G = 0.1


def _acc(name: str) -> Path:
    return shared_data("wearable", "accelerometer", name)


@pytest.mark.parametrize(
    ("name", "device", "fs", "n_raw", "n_grid", "start"),
    [
        # 145 data sectors × 120 samples; grid = (last − first sample time) × 100 Hz + 1
        ("ax3_testfile.cwa", "axivity_cwa", 100.0, 17400, 17599, "2019-02-26 10:55:06.000488281"),
        # the file is cut at 64 KiB inside its 17th 300-sample page; first page time as in GGIRread's test
        ("GENEActiv_testfile.bin", "geneactiv_bin", 85.7, 5031, 5030, "2013-05-30 10:12:54.5"),
        # GGIRread readParmayMatrix unit test: sf 25, 24,525 rows, 4 packets
        ("mtx_25Hz_acc_HR.BIN", "matrix_bin", 25.0, 25119, 24525, "2025-01-24 21:22:01"),
    ],
)
def test_real_raw_files(name, device, fs, n_raw, n_grid, start):
    rec = read_raw_accelerometer(_acc(name))
    assert rec.device == device and rec.sampling_rate_hz == fs
    assert rec.n_raw_samples == n_raw and rec.acc_g.shape == (n_grid, 3)
    assert rec.start == pd.Timestamp(start)
    assert np.isfinite(rec.acc_g).all()
    magnitude = np.linalg.norm(rec.acc_g, axis=1)
    assert abs(np.median(magnitude) - 1.0) <= GRAVITY_TOL_G
    assert abs(rec.observed_rate_hz - fs) / fs < 0.03  # device clocks within 3 % of the configured rate


def test_matrix_heart_rate_channel_and_truncation_notes():
    mtx = read_raw_accelerometer(_acc("mtx_25Hz_acc_HR.BIN"))
    assert mtx.hr is not None and mtx.hr.tolist() == [77.0, 76.0]  # one reading in packets 1 and 3
    assert mtx.hr.index[1] == pd.Timestamp("2025-01-24 21:30:50") and mtx.notes == ()
    gene = read_raw_accelerometer(_acc("GENEActiv_testfile.bin"))
    assert gene.hr is None and gene.notes == ("truncated_file",)  # 17 of 222,048 declared pages
    assert read_raw_accelerometer(_acc("ax3_testfile.cwa")).notes == ()


def _copy(tmp_path: Path, name: str, new_name: str, edit) -> Path:
    data = bytearray(_acc(name).read_bytes())
    out = tmp_path / new_name
    out.write_bytes(bytes(edit(data)))
    return out


def _flip(data: bytearray, at: int) -> bytearray:
    data[at] ^= 0xFF
    return data


@pytest.mark.parametrize(
    ("name", "new_name", "edit", "message"),
    [
        ("ax3_testfile.cwa", "cut_mid_sector.cwa", lambda d: d[: len(d) // 2 + 100], "truncated"),
        ("ax3_testfile.cwa", "cut_in_header.cwa", lambda d: d[:600], "unreadable"),
        ("ax3_testfile.cwa", "bad_sector.cwa", lambda d: _flip(d, 2048), "unreadable"),
        ("ax3_testfile.cwa", "empty.cwa", lambda d: d[:0], "unreadable"),
        ("GENEActiv_testfile.bin", "cut_in_header.bin", lambda d: d[:600], "unreadable"),
        ("GENEActiv_testfile.bin", "binary_body.bin", lambda d: d[:3000] + b"\xff\xfe" * 5000, "unreadable"),
        ("mtx_25Hz_acc_HR.BIN", "cut_last_packet.BIN", lambda d: d[:-1000], "truncated"),
        ("mtx_25Hz_acc_HR.BIN", "missing_packets.BIN", lambda d: d[:81816], r"truncated \(2 of 4"),
        ("mtx_25Hz_acc_HR.BIN", "bit_rot.BIN", lambda d: _flip(d, 50000), "CRC-32"),
        ("mtx_25Hz_acc_HR.BIN", "no_header.BIN", lambda d: d[:400], "unreadable"),
    ],
)
def test_truncated_or_corrupt_copies_raise_naming_the_file(tmp_path, name, new_name, edit, message):
    path = _copy(tmp_path, name, new_name, edit)
    with pytest.raises(WaveformReadError, match=message) as err:
        read_raw_accelerometer(path)
    assert new_name in str(err.value)
    assert not re.search(r"\b[0-9a-f]{2} [0-9a-f]{2}\b|0x[0-9a-f]+", str(err.value))  # no file bytes quoted
    with pytest.raises(WaveformReadError, match=new_name.replace(".", r"\.")):
        file_features(path)


def test_geneactiv_cut_inside_the_data_is_read_and_flagged(tmp_path):
    path = _copy(tmp_path, "GENEActiv_testfile.bin", "cut_data.bin", lambda d: d[: len(d) // 2])
    rec = read_raw_accelerometer(path)
    assert 2000 < rec.n_raw_samples < 5031 and rec.notes == ("truncated_file",)
    out = file_features(path)
    assert out["quality_flag"] == "low_quality" and "truncated_file" in out["quality_reason"]


def test_resample_uniform_keeps_gaps_as_nan():
    t = np.r_[np.arange(0, 10, 0.01), np.arange(15, 20, 0.01)]  # 5-s gap after 10 s
    v = np.column_stack([np.sin(t), np.cos(t), t])
    out = resample_uniform(t, v, 50.0)
    grid = np.arange(len(out)) / 50.0
    assert len(out) == int(np.floor(19.99 * 50 + 1e-9)) + 1
    gap = (grid > 9.99) & (grid < 15.0)
    assert np.isnan(out[gap]).all() and np.isfinite(out[~gap]).all()
    assert np.allclose(out[~gap, 2], grid[~gap], atol=1e-9)


def test_file_features_on_raw_binaries():
    cols = set(feature_columns("wearable"))
    mtx = file_features(_acc("mtx_25Hz_acc_HR.BIN"))
    assert cols <= set(mtx) and mtx["raw_device"] == "matrix_bin" and mtx["n_channels"] == 4
    assert mtx["resting_hr_bpm"] == pytest.approx(76.1) and mtx["pulse_rate_bpm"] == pytest.approx(76.5)
    assert mtx["sedentary_fraction"] == 1.0 and mtx["active_minutes"] == 0  # a device lying still
    assert mtx["activity_quality_flag"] == "ok" and 0 < mtx["activity_counts_per_min"] < 45
    assert mtx["quality_flag"] == "low_quality" and mtx["quality_reason"] == "hr:few_hr_minutes"  # 2 HR readings
    ax3 = file_features(_acc("ax3_testfile.cwa"))
    assert cols <= set(ax3) and ax3["quality_flag"] == "ok" and ax3["duration_s"] == pytest.approx(175.99)
    assert ax3["ppg_quality_reason"] == "no_ppg_in_export" and np.isnan(ax3["resting_hr_bpm"])
