"""Raw triaxial accelerometer binaries: Axivity `.cwa`, GENEActiv `.bin`, Matrix (Parmay) `.BIN`.

:func:`read_raw_accelerometer` returns a :class:`RawAccelerometer`: acceleration in g on a uniform
grid at the device's configured rate, the start time (device clock, naive), and the heart-rate
series when the device records one (Matrix). Axivity and GENEActiv files are decoded by `actfast`
(`actfast.read(path)`: per-sample timestamps in ns and acceleration in g); the Matrix format is not
supported by actfast and is decoded here following GGIRread's `readParmayMatrix` (wadpac/GGIRread,
Apache-2.0), checked against its unit-test figures (25 Hz test file: 4 packets, 24,525 rows).

Matrix layout (little-endian): bytes 0–511 remarks; 512–515 "MDTC"; 516–519 int32 declared packet
count; 520–521 int16 accelerometer range (g); 522–523 int16 gyroscope range. Each packet starts
with "MDTCPACK" (8 bytes), then uint32 CRC-32 of the rest of the packet (from byte 12 to the next
packet), int32 start and end time (s since 1970, device clock), int32 counts of accelerometer (a),
gyroscope (g), temperature (t) and heart-rate (h) readings, then 6a bytes acceleration (int16 x, y,
z; × range / 32767, negative values / 32768), 6g gyroscope, 4t temperature, 4h heart rate (int16
raw, int16 bpm; 0 = no reading). Sample times are spread evenly over [start, end − 1/fs] of each
packet; a packet whose start lags the previous end by ≥ 1 s is moved back to it (GGIRread's
"lagging packet" rule); fs is the nearest of 12.5/25/50/100 Hz to the first ≥ 10-s packet's rate.

Every format is resampled (linear interpolation on the sample timestamps) onto a grid from the first
sample at the configured rate; grid points in a gap > 1 s between samples are NaN (not bridged).

Errors raise WaveformReadError naming the file (never its contents): unknown or unreadable format,
a header cut short, a corrupt block (bad sector magic, failed CRC), a Matrix file with fewer packets
than it declares or a packet shorter than its counts, an Axivity file that is not a whole number of
512-byte sectors after its header (the copy was cut), no samples. A GENEActiv file that holds fewer
pages than its header declares (the reference test file itself is cut at 64 KiB) is read as far as
it goes and reported in `notes` ("truncated_file") instead: its samples are line-based text, whole.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.sources.wfdb_io import WaveformReadError

MATRIX_RATES_HZ = (12.5, 25.0, 50.0, 100.0)
GAP_S = 1.0  # a longer step between two samples is a gap: the grid points inside it are NaN
CWA_SECTOR = 512
GENEACTIV_PAGE_SAMPLES = 300
_MATRIX_PACKET = b"MDTCPACK"
_MATRIX_FIELDS = struct.Struct("<Iiiiiii")  # crc, t0, t1, n_acc, n_gyro, n_temp, n_heart


@dataclass(frozen=True)
class RawAccelerometer:
    """One raw accelerometer recording.

    acc_g: (n, 3) float64 acceleration in g (x, y, z), uniform at `sampling_rate_hz`, NaN in gaps;
    sampling_rate_hz: the configured rate of the grid (Hz); start: time of the first sample
    (device clock, tz-naive); hr: heart rate in bpm indexed by time (device clock), None when the
    device has no heart-rate channel; device: "axivity_cwa" | "geneactiv_bin" | "matrix_bin";
    n_raw_samples: samples in the file before resampling; observed_rate_hz: (n_raw − 1) / span of
    the raw timestamps; notes: conditions that did not stop reading ("truncated_file").
    """

    acc_g: np.ndarray
    sampling_rate_hz: float
    start: pd.Timestamp
    hr: pd.Series | None
    device: str
    n_raw_samples: int
    observed_rate_hz: float
    notes: tuple[str, ...] = field(default=())

    @property
    def duration_s(self) -> float:
        """Length of the grid in seconds (samples / rate)."""
        return len(self.acc_g) / self.sampling_rate_hz


def read_raw_accelerometer(path: str | Path) -> RawAccelerometer:
    """Read an Axivity .cwa, GENEActiv .bin or Matrix .BIN file (see module doc)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(520)
    except OSError as exc:
        raise WaveformReadError(f"cannot read accelerometer file {path}: {type(exc).__name__}") from exc
    if head[512:516] == b"MDTC":
        return read_matrix_bin(path)
    return read_actfast(path)


def resample_uniform(t_s: np.ndarray, values: np.ndarray, fs: float) -> np.ndarray:
    """Linear interpolation of `values` (n, k) sampled at increasing times `t_s` (s) onto a grid from
    t_s[0] with step 1/fs and floor((t_s[-1] − t_s[0])·fs) + 1 points; grid points between two
    samples more than GAP_S apart are NaN."""
    t = np.asarray(t_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    n = int(np.floor((t[-1] - t[0]) * fs + 1e-9)) + 1
    grid = t[0] + np.arange(n) / fs
    out = np.column_stack([np.interp(grid, t, v[:, k]) for k in range(v.shape[1])])
    right = np.clip(np.searchsorted(t, grid, side="right"), 1, len(t) - 1)
    left = right - 1
    gap = ((t[right] - t[left]) > GAP_S) & (grid > t[left]) & (grid < t[right])  # a sample itself is kept
    out[gap] = np.nan
    return out


def read_actfast(path: str | Path) -> RawAccelerometer:
    """Axivity .cwa or GENEActiv .bin through `actfast` (see module doc)."""
    import actfast

    path = Path(path)
    try:
        data = actfast.read(str(path))
    except Exception as exc:  # actfast raises ValueError / OSError with a format message
        raise WaveformReadError(f"accelerometer file {path}: unreadable ({_redact(str(exc))})") from exc
    fmt = str(data.get("format", ""))
    hf = data.get("timeseries", {}).get("high_frequency", {})
    acc, t_ns = hf.get("acceleration"), hf.get("datetime")
    if acc is None or t_ns is None or len(t_ns) < 2:
        raise WaveformReadError(f"accelerometer file {path}: no acceleration samples")
    meta = data.get("metadata", {})
    notes: list[str] = []
    if fmt.startswith("Axivity"):
        device = "axivity_cwa"
        nominal = _number(meta.get("configuration", {}).get("sample_rate_hz"))
        with path.open("rb") as fh:
            header = fh.read(4)
        header_len = struct.unpack("<H", header[2:4])[0] + 4
        extra = (path.stat().st_size - header_len) % CWA_SECTOR
        if extra:
            raise WaveformReadError(
                f"accelerometer file {path}: truncated (partial {CWA_SECTOR}-byte sector of {extra} bytes at the end)"
            )
    elif fmt.startswith("GeneActiv"):
        device = "geneactiv_bin"
        nominal = _number(meta.get("Configuration Info", {}).get("Measurement Frequency"))
        pages = _number(meta.get("Memory Status", {}).get("Number of Pages"))
        if pages and len(t_ns) < pages * GENEACTIV_PAGE_SAMPLES:
            notes.append("truncated_file")
    else:
        raise WaveformReadError(f"accelerometer file {path}: unsupported raw format {fmt or 'unknown'}")
    t_s = (np.asarray(t_ns, dtype=np.int64) - int(t_ns[0])) / 1e9
    if np.any(np.diff(t_s) <= 0):
        raise WaveformReadError(f"accelerometer file {path}: sample times are not increasing")
    observed = (len(t_s) - 1) / t_s[-1]
    fs = nominal if nominal and nominal > 0 else float(np.round(observed, 1))
    grid = resample_uniform(t_s, np.asarray(acc, dtype=np.float64), fs)
    start = pd.Timestamp(int(t_ns[0]), unit="ns")
    return RawAccelerometer(grid, float(fs), start, None, device, int(len(t_s)), float(observed), tuple(notes))


def _redact(message: str) -> str:
    """actfast's message without the file bytes it quotes (magic bytes, sector words), ≤ 160 chars."""
    message = re.sub(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{2}(?: [0-9a-fA-F]{2})+\b", "<bytes>", message)
    return message[:160]


def _number(text) -> float | None:
    m = re.search(r"[-+]?\d+(?:\.\d+)?", str(text)) if text is not None else None
    return float(m.group()) if m else None


def read_matrix_bin(path: str | Path) -> RawAccelerometer:
    """Matrix (Parmay) .BIN: acceleration (g) and heart rate (bpm), see module doc."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WaveformReadError(f"cannot read accelerometer file {path}: {type(exc).__name__}") from exc
    if len(raw) < 524 or raw[512:516] != b"MDTC":
        raise WaveformReadError(f"accelerometer file {path}: not a Matrix BIN (no MDTC header)")
    declared, acc_range = struct.unpack_from("<ih", raw, 516)
    starts = [m.start() for m in re.finditer(re.escape(_MATRIX_PACKET), raw)]
    if not starts:
        raise WaveformReadError(f"accelerometer file {path}: Matrix BIN without data packets")
    if len(starts) < declared:
        raise WaveformReadError(f"accelerometer file {path}: truncated ({len(starts)} of {declared} declared packets)")
    ends = [*starts[1:], len(raw)]
    t0s, t1s, accs, hr_parts = [], [], [], []
    for k, (s, e) in enumerate(zip(starts, ends), start=1):
        if e - s < 8 + _MATRIX_FIELDS.size:
            raise WaveformReadError(f"accelerometer file {path}: truncated Matrix packet {k} of {len(starts)}")
        crc, t0, t1, n_acc, n_gyro, n_temp, n_heart = _MATRIX_FIELDS.unpack_from(raw, s + 8)
        counts_ok = min(n_acc, n_gyro, n_temp, n_heart) >= 0
        need = 36 + 6 * n_acc + 6 * n_gyro + 4 * n_temp + 4 * n_heart
        if not counts_ok or e - s < need:
            raise WaveformReadError(
                f"accelerometer file {path}: truncated or corrupt Matrix packet {k} of {len(starts)} "
                f"({e - s} bytes, its counts need {need})"
            )
        if zlib.crc32(raw[s + 12 : e]) != crc:
            raise WaveformReadError(
                f"accelerometer file {path}: Matrix packet {k} of {len(starts)} fails its CRC-32 check"
            )
        a = np.frombuffer(raw, dtype="<i2", count=3 * n_acc, offset=s + 36).reshape(-1, 3).astype(np.float64)
        accs.append(np.where(a >= 0, a / 32767.0, a / 32768.0) * acc_range)
        h0 = s + 36 + 6 * n_acc + 6 * n_gyro + 4 * n_temp
        hr_parts.append(np.frombuffer(raw, dtype="<i2", count=2 * n_heart, offset=h0).reshape(-1, 2)[:, 1])
        t0s.append(float(t0))
        t1s.append(float(t1))
    n_acc_all = np.array([len(a) for a in accs])
    if n_acc_all.sum() < 2:
        raise WaveformReadError(f"accelerometer file {path}: Matrix BIN without accelerometer samples")
    t0a, t1a = np.array(t0s), np.array(t1s)
    dur = t1a - t0a
    long = np.flatnonzero(dur >= 10)
    rate = n_acc_all[long[0]] / dur[long[0]] if len(long) else n_acc_all.sum() / max(dur.sum(), 1.0)
    fs = MATRIX_RATES_HZ[int(np.argmin([abs(r - rate) for r in MATRIX_RATES_HZ]))]
    lag = np.flatnonzero(t0a[1:] - t1a[:-1] >= 1) + 1  # GGIRread: a lagging packet starts at the previous end
    t0a[lag] = t1a[lag - 1]
    t1a = t1a - 1.0 / fs
    t_acc = np.concatenate([np.linspace(a, b, n) for a, b, n in zip(t0a, t1a, n_acc_all)])
    t_hr = np.concatenate([np.linspace(a, b, len(h)) for a, b, h in zip(t0a, t1a, hr_parts)])
    acc = np.concatenate(accs)
    order = np.argsort(t_acc, kind="stable")
    t_acc, acc = t_acc[order], acc[order]
    keep = np.concatenate(([True], np.diff(t_acc) > 0))
    grid = resample_uniform(t_acc[keep], acc[keep], fs)
    start = pd.Timestamp(t_acc[0], unit="s")
    hr_bpm = np.concatenate(hr_parts).astype(np.float64)
    hr = None
    if any(len(h) for h in hr_parts):
        hr_bpm[hr_bpm <= 0] = np.nan
        hr = pd.Series(hr_bpm, index=start + pd.to_timedelta(t_hr - t_acc[0], unit="s"), name="bpm")
    observed = (len(t_acc) - 1) / (t1s[-1] - t0s[0]) if t1s[-1] > t0s[0] else float("nan")
    return RawAccelerometer(grid, float(fs), start, hr, "matrix_bin", int(len(t_acc)), float(observed))
