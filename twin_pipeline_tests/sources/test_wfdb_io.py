"""wfdb_io: reading (single/multi-segment, mixed rates, invalid samples, broken files) and writing."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import neurokit2 as nk
import numpy as np
import pytest
import wfdb

from twin_pipeline.sources.wfdb_io import WaveformReadError, WaveformRecord, read_record, write_record

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
BEDSIDE = DATA / "bedside"
MITDB = DATA / "ecg" / "mitdb"


def _write_ecg(tmp_path: Path, name: str = "ecg_rec", n_s: float = 10.0, fs: int = 250) -> tuple[Path, np.ndarray]:
    x = nk.ecg_simulate(duration=n_s, sampling_rate=fs, heart_rate=70, method="simple", random_state=3)
    sig = np.column_stack([x, 0.5 * x])
    wfdb.wrsamp(name, fs=fs, units=["mV", "mV"], sig_name=["MLII", "V5"], p_signal=sig, fmt=["16", "16"],
                comments=["patient: X"], base_datetime=dt.datetime(2021, 3, 4, 5, 6, 7), write_dir=str(tmp_path))
    return tmp_path / name, sig


def test_read_single_segment_record_in_physical_units(tmp_path):
    stem, sig = _write_ecg(tmp_path)
    rec = read_record(stem)
    assert rec.name == "ecg_rec"
    assert rec.sampling_rate == 250.0
    assert rec.sig_names == ["MLII", "V5"] and rec.units == ["mV", "mV"]
    assert rec.n_samples == len(sig) == len(rec.signals["MLII"])
    assert rec.signals["MLII"].dtype == np.float64
    np.testing.assert_allclose(rec.signals["V5"], sig[:, 1], atol=1e-3)
    assert rec.base_datetime == dt.datetime(2021, 3, 4, 5, 6, 7)
    assert rec.comments == ["patient: X"]
    assert read_record(str(stem) + ".hea").n_samples == rec.n_samples  # .hea path accepted too


def test_invalid_samples_become_nan(tmp_path):
    stem, sig = _write_ecg(tmp_path)
    d = wfdb.rdrecord(str(stem), physical=False)
    d.d_signal[100:160, 0] = -32768  # a run of the format-16 invalid value
    d.wrsamp(write_dir=str(tmp_path))
    rec = read_record(stem)
    assert np.isnan(rec.signals["MLII"][100:160]).all()
    assert np.isfinite(rec.signals["MLII"][:100]).all() and np.isfinite(rec.signals["V5"]).all()


def test_channel_subset_keeps_requested_order(tmp_path):
    stem, _ = _write_ecg(tmp_path)
    rec = read_record(stem, channels=["V5", "MLII"])
    assert rec.sig_names == ["V5", "MLII"]
    with pytest.raises(WaveformReadError, match="ecg_rec"):
        read_record(stem, channels=["PLETH"])


def test_mixed_samples_per_frame_resampled_explicitly(tmp_path):
    n_frames = 100
    fast = np.arange(2 * n_frames, dtype=float)  # 2 samples per frame: 0, 1, 2, ...
    slow = np.arange(n_frames, dtype=float) * 10.0
    wfdb.wrsamp("mixed", fs=50, units=["mV", "NU"], sig_name=["ECG", "PLETH"], e_p_signal=[fast, slow],
                samps_per_frame=[2, 1], fmt=["16", "16"], adc_gain=[100.0, 10.0], baseline=[0, 0],
                write_dir=str(tmp_path))
    framed = read_record(tmp_path / "mixed")
    assert framed.sampling_rate == 50.0 and framed.n_samples == n_frames
    np.testing.assert_allclose(framed.signals["ECG"], fast.reshape(-1, 2).mean(axis=1))  # block mean 0.5, 2.5, ...
    np.testing.assert_allclose(framed.signals["PLETH"], slow)
    fastest = read_record(tmp_path / "mixed", resample_to="fastest")
    assert fastest.sampling_rate == 100.0 and fastest.n_samples == 2 * n_frames
    np.testing.assert_allclose(fastest.signals["ECG"], fast)
    np.testing.assert_allclose(fastest.signals["PLETH"][:6], [0, 5, 10, 15, 20, 25])  # linear interpolation


def _bedside_headers() -> list[Path]:
    return sorted(p for p in BEDSIDE.rglob("*.hea") if not p.stem.endswith("_layout"))


@pytest.mark.parametrize("header", _bedside_headers(), ids=lambda p: str(p.relative_to(BEDSIDE)))
def test_every_bedside_record_reads(header):
    if header.stem == "mixedsignals":
        pytest.importorskip("soundfile", reason="mixedsignals is FLAC-compressed: wfdb needs `soundfile`")
    rec = read_record(header)
    assert rec.n_samples > 0 and np.isfinite(rec.n_samples)
    assert np.isfinite(rec.sampling_rate) and rec.sampling_rate > 0
    assert all(len(v) == rec.n_samples for v in rec.signals.values())
    assert any(np.isfinite(v).any() for v in rec.signals.values())


def test_multi_segment_gaps_are_nan():
    rec = read_record(BEDSIDE / "multi-segment" / "s25047" / "s25047-2704-05-04-10-44")
    assert rec.sig_names == ["II", "V", "ABP"]
    assert rec.n_samples == 543240
    assert np.isnan(rec.signals["II"][:25740]).all()  # the header's leading "~ 25740" gap
    assert np.isfinite(rec.signals["II"][25740:25740 + 1000]).all()
    assert rec.base_datetime is not None and rec.base_datetime.year == 2704


def test_mixedsignals_flac_record_on_frame_and_fastest_rate():
    pytest.importorskip("soundfile", reason="mixedsignals is FLAC-compressed: wfdb needs `soundfile`")
    framed = read_record(BEDSIDE / "mixedsignals")
    fastest = read_record(BEDSIDE / "mixedsignals", resample_to="fastest")
    assert framed.sampling_rate == pytest.approx(62.4725) and framed.n_samples == 14400
    assert fastest.sampling_rate == pytest.approx(4 * 62.4725) and fastest.n_samples == 4 * 14400
    # frame rate = block mean of each frame's 4 samples (NaN if any of them is invalid)
    np.testing.assert_allclose(framed.signals["II"], fastest.signals["II"].reshape(-1, 4).mean(axis=1), equal_nan=True)
    assert np.isnan(framed.signals["II"]).sum() * 4 == np.isnan(fastest.signals["II"]).sum()


def test_layout_only_header_is_a_read_error():
    with pytest.raises(WaveformReadError, match="3234460_layout"):
        read_record(BEDSIDE / "multi-segment" / "s25047" / "3234460_layout")


def _copy_record(tmp_path: Path, name: str) -> Path:
    stem, _ = _write_ecg(tmp_path, name=name)
    return stem


def test_truncated_dat_raises_with_record_name(tmp_path):
    stem = _copy_record(tmp_path, "trunc_rec")
    dat = stem.with_suffix(".dat")
    with open(dat, "r+b") as f:
        f.truncate(dat.stat().st_size // 2 + 1)  # mid-sample
    with pytest.raises(WaveformReadError, match="trunc_rec"):
        read_record(stem)


def test_header_longer_than_data_raises_with_record_name(tmp_path):
    stem = _copy_record(tmp_path, "long_rec")
    hea = stem.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    fields = lines[0].split()
    fields[3] = str(int(fields[3]) * 2)  # promise twice the samples the .dat holds
    hea.write_text("\n".join([" ".join(fields), *lines[1:]]) + "\n")
    with pytest.raises(WaveformReadError, match="long_rec"):
        read_record(stem)


def test_missing_dat_and_missing_header_raise(tmp_path):
    stem = _copy_record(tmp_path, "nodat_rec")
    stem.with_suffix(".dat").unlink()
    with pytest.raises(WaveformReadError, match="nodat_rec"):
        read_record(stem)
    with pytest.raises(WaveformReadError, match="absent_rec"):
        read_record(tmp_path / "absent_rec")


def test_write_record_renames_and_replaces_header_fields(tmp_path):
    shutil.copy(MITDB / "100s.hea", tmp_path / "100s.hea")
    shutil.copy(MITDB / "100s.dat", tmp_path / "100s.dat")
    src = read_record(tmp_path / "100s")
    src.signals["MLII"][10:20] = np.nan
    shifted = dt.datetime(2030, 1, 2, 3, 4, 5)
    out = write_record(src, tmp_path / "out", record_name="ecg_p0001", base_datetime=shifted, comments=["deid"])
    assert out == tmp_path / "out" / "ecg_p0001.hea"
    back = read_record(out)
    assert back.name == "ecg_p0001" and back.base_datetime == shifted and back.comments == ["deid"]
    assert back.sig_names == src.sig_names and back.units == src.units and back.n_samples == src.n_samples
    assert np.isnan(back.signals["MLII"][10:20]).all()
    np.testing.assert_allclose(back.signals["V5"], src.signals["V5"], atol=1e-3)
    header = out.read_text()
    assert "100s" not in header and " 16 " in header  # new name, format 16


def test_write_record_handles_all_nan_and_constant_channels(tmp_path):
    n = 500
    rec = WaveformRecord(name="x", sampling_rate=50.0, sig_names=["PPG", "ACC", "EMPTY"], units=["adu", "g", "NU"],
                         signals={"PPG": np.linspace(-5, 5, n), "ACC": np.full(n, 1.0), "EMPTY": np.full(n, np.nan)},
                         n_samples=n)
    back = read_record(write_record(rec, tmp_path, record_name="w1", base_datetime=None, comments=[]))
    np.testing.assert_allclose(back.signals["PPG"], rec.signals["PPG"], atol=1e-3)
    np.testing.assert_allclose(back.signals["ACC"], 1.0, atol=1e-3)
    assert np.isnan(back.signals["EMPTY"]).all()
    assert back.base_datetime is None
