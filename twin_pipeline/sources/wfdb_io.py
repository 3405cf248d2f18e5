"""Read and write WFDB waveform records (landing `waveforms/`) with wfdb-python.

Every read goes through :func:`read_record`, which returns one :class:`WaveformRecord`: all channels
on one common sampling rate, physical units, float64, NaN for invalid samples (the WFDB "invalid"
digital value, e.g. -32768 in format 16, and the gaps of multi-segment records). Every failure to
read (missing or truncated signal file, a header that promises more samples than the file holds,
a malformed header) raises :class:`WaveformReadError` naming the record path, so the caller can
quarantine the record. Messages never include signal values or header comments (PHI).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import wfdb

ResampleTarget = Literal["frame", "fastest"]


class WaveformReadError(Exception):
    """A WFDB record that cannot be read; the message names the record path (never its contents)."""


@dataclass
class WaveformRecord:
    """One WFDB record on a single sampling rate.

    `signals` maps channel name → float64 array in the channel's physical `units` (same order as
    `sig_names`), all of length `n_samples` at `sampling_rate` Hz, NaN for invalid samples.
    `base_datetime` is the header's base date+time (None when the header has no date).
    """

    name: str
    sampling_rate: float
    sig_names: list[str]
    units: list[str]
    signals: dict[str, np.ndarray]
    n_samples: int
    base_datetime: dt.datetime | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """Record duration in seconds (n_samples / sampling_rate)."""
        return self.n_samples / self.sampling_rate if self.sampling_rate > 0 else float("nan")

    def units_of(self, channel: str) -> str:
        """Physical units of one channel."""
        return self.units[self.sig_names.index(channel)]


def _record_stem(record_path: str | Path) -> Path:
    """`dir/name`, `dir/name.hea` → `dir/name` (wfdb wants the record path without extension)."""
    path = Path(record_path)
    return path.with_suffix("") if path.suffix == ".hea" else path


def _unique_names(names: list[str]) -> list[str]:
    """Make channel names unique: the 2nd `II` becomes `II_2`, the 3rd `II_3` (dict keys)."""
    seen: dict[str, int] = {}
    out = []
    for i, raw in enumerate(names):
        name = raw if raw else f"ch{i}"
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def frames_to_frame_rate(samples: np.ndarray, samps_per_frame: int) -> np.ndarray:
    """Block-average a channel with `samps_per_frame` samples per frame down to the frame rate.

    Each output sample is the mean of the channel's samples in that frame (a boxcar anti-alias
    filter followed by decimation; identical to wfdb's `smooth_frames=True`). A frame holding any
    NaN sample is NaN. An incomplete trailing frame is dropped.
    """
    x = np.asarray(samples, dtype=np.float64)
    if samps_per_frame == 1:
        return x
    n_frames = len(x) // samps_per_frame
    return x[: n_frames * samps_per_frame].reshape(n_frames, samps_per_frame).mean(axis=1)


def frames_upsample(samples: np.ndarray, samps_per_frame: int, target_spf: int, n_frames: int) -> np.ndarray:
    """Resample a channel from `samps_per_frame` to `target_spf` samples per frame (linear interpolation).

    Sample j of a channel with k samples per frame sits at time j / (k · fs); output samples are
    linearly interpolated on the target grid (held flat past the last input sample). A NaN input
    sample makes the output NaN on both intervals that touch it.
    """
    x = np.asarray(samples, dtype=np.float64)
    if samps_per_frame == target_spf:
        return x[: n_frames * target_spf]
    t_in = np.arange(len(x)) / samps_per_frame
    t_out = np.arange(n_frames * target_spf) / target_spf
    return np.interp(t_out, t_in, x)


def _read_header(stem: Path):
    try:
        return wfdb.rdheader(str(stem))
    except Exception as exc:  # wfdb raises FileNotFoundError, ValueError, IndexError, ... for bad headers
        raise WaveformReadError(f"cannot read WFDB header of record {stem}: {type(exc).__name__}: {exc}") from exc


def read_record(
    record_path: str | Path,
    *,
    channels: list[str] | None = None,
    resample_to: ResampleTarget = "frame",
) -> WaveformRecord:
    """Read a WFDB record (single- or multi-segment) into a :class:`WaveformRecord`.

    Parameters
    ----------
    record_path : record path without extension (or the `.hea` path).
    channels : channel names to read, in that order (default: all). A name the header does not
        have raises WaveformReadError.
    resample_to : how channels with different samples-per-frame are put on one rate.
        "frame" (default): the record's frame rate `fs`; a channel with k samples per frame is
        block-averaged over its k samples (see :func:`frames_to_frame_rate`).
        "fastest": `fs × max(samples per frame)`; slower channels are linearly interpolated up
        (see :func:`frames_upsample`), the fastest channel is kept as recorded.
        Records whose channels all have one sample per frame are unaffected.

    Multi-segment records are read with `wfdb.rdrecord(m2s=True)` (segments merged, gaps and
    channels absent from a segment become NaN). Invalid samples are NaN (wfdb's physical conversion).
    """
    stem = _record_stem(record_path)
    header = _read_header(stem)
    is_multi = isinstance(header, wfdb.MultiRecord)
    all_names = list(header.sig_name or []) if not is_multi else _multi_sig_names(stem, header)
    if channels is not None:
        missing = [c for c in channels if c not in all_names]
        if missing:
            raise WaveformReadError(f"record {stem} has no channel(s) {missing} (has {all_names})")
    fs = float(header.fs)
    if not fs > 0:
        raise WaveformReadError(f"record {stem} has a non-positive sampling frequency {header.fs!r}")
    if header.sig_len == 0:  # e.g. the layout header of a variable-layout multi-segment record
        raise WaveformReadError(f"record {stem} has no samples (header signal length 0)")

    try:
        if is_multi:
            rec = wfdb.rdrecord(str(stem), channel_names=channels, m2s=True, return_res=64)
            spf = [1] * rec.n_sig
            per_channel = [rec.p_signal[:, i] for i in range(rec.n_sig)]
            n_frames = rec.p_signal.shape[0]
        else:
            spf = [int(s) for s in (header.samps_per_frame or [1] * header.n_sig)]
            if channels is not None:
                spf = [spf[all_names.index(c)] for c in channels]
            if all(s == 1 for s in spf):
                rec = wfdb.rdrecord(str(stem), channel_names=channels, return_res=64)
                per_channel = [rec.p_signal[:, i] for i in range(rec.n_sig)]
                n_frames = rec.p_signal.shape[0]
            else:
                rec = wfdb.rdrecord(str(stem), channel_names=channels, smooth_frames=False, return_res=64)
                per_channel = list(rec.e_p_signal)
                n_frames = min(len(x) // k for x, k in zip(per_channel, spf))
    except Exception as exc:  # missing/truncated .dat, header longer than data, bad format, ...
        raise WaveformReadError(f"cannot read WFDB record {stem}: {type(exc).__name__}: {exc}") from exc

    expected = header.sig_len  # None when the header leaves the length to the signal file's size
    if expected is not None and n_frames != int(expected):
        raise WaveformReadError(
            f"record {stem}: header promises {expected} samples per channel, the signal files hold {n_frames}"
        )

    if resample_to == "frame":
        arrays = [frames_to_frame_rate(x, k)[:n_frames] for x, k in zip(per_channel, spf)]
        rate = fs
    elif resample_to == "fastest":
        top = max(spf)
        arrays = [frames_upsample(x, k, top, n_frames) for x, k in zip(per_channel, spf)]
        rate = fs * top
    else:
        raise ValueError(f"resample_to must be 'frame' or 'fastest', got {resample_to!r}")

    names = _unique_names(list(rec.sig_name))
    base = getattr(rec, "base_datetime", None)
    return WaveformRecord(
        name=str(rec.record_name),
        sampling_rate=rate,
        sig_names=names,
        units=[str(u) for u in rec.units],
        signals={n: np.ascontiguousarray(a, dtype=np.float64) for n, a in zip(names, arrays)},
        n_samples=int(len(arrays[0])) if arrays else 0,
        base_datetime=base if isinstance(base, dt.datetime) else None,
        comments=list(rec.comments or []),
    )


def _multi_sig_names(stem: Path, header) -> list[str]:
    """Channel names of a multi-segment record (layout segment, else union over segments in order)."""
    try:
        names: list[str] = []
        for seg_name in header.seg_name:
            if seg_name == "~":
                continue
            seg = wfdb.rdheader(str(stem.parent / seg_name))
            for n in seg.sig_name or []:
                if n not in names:
                    names.append(n)
            if header.layout == "variable":  # the first real segment is the layout header
                break
        return names
    except Exception as exc:
        raise WaveformReadError(f"cannot read segment headers of record {stem}: {type(exc).__name__}: {exc}") from exc


def write_record(
    rec: WaveformRecord,
    out_dir: Path,
    *,
    record_name: str,
    base_datetime: dt.datetime | None,
    comments: list[str] | None,
) -> Path:
    """Write `rec` as a WFDB record `<out_dir>/<record_name>.hea/.dat` (format 16, physical units).

    Used by de-identification to write a renamed, date-shifted copy: the header gets only the given
    `record_name`, `base_datetime` and `comments` (nothing of the source header's is carried over).
    wfdb chooses each channel's ADC gain/baseline to span the 16-bit range; NaN is written as the
    invalid value -32768. Returns the `.hea` path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not rec.sig_names:
        raise ValueError(f"record {rec.name}: nothing to write (no channels)")
    p_signal = np.column_stack([np.asarray(rec.signals[n], dtype=np.float64) for n in rec.sig_names])
    adc_gain, baseline = _adc_params(p_signal)
    kwargs = {}
    if base_datetime is not None:
        kwargs["base_datetime"] = base_datetime
    wfdb.wrsamp(
        record_name,
        fs=float(rec.sampling_rate),
        units=list(rec.units),
        sig_name=list(rec.sig_names),
        p_signal=p_signal,
        fmt=["16"] * len(rec.sig_names),
        adc_gain=adc_gain,
        baseline=baseline,
        comments=list(comments or []),
        write_dir=str(out_dir),
        **kwargs,
    )
    return out_dir / f"{record_name}.hea"


def _adc_params(p_signal: np.ndarray) -> tuple[list[float], list[int]]:
    """ADC gain (digital units per physical unit) and baseline per channel for format 16.

    Maps each channel's finite [min, max] onto [-32767, 32767] (-32768 stays the invalid value);
    an all-NaN or constant channel gets gain 1000 (resp. a gain that keeps the value exact enough).
    """
    dmin, dmax = -32767, 32767
    gains, baselines = [], []
    for col in p_signal.T:
        finite = col[np.isfinite(col)]
        if finite.size == 0:
            gains.append(1000.0)
            baselines.append(0)
            continue
        lo, hi = float(finite.min()), float(finite.max())
        if hi - lo < 1e-12:
            gain = min(1000.0, (dmax - 1) / max(abs(lo), 1e-3))
            gains.append(gain)
            baselines.append(0)
            continue
        gain = (dmax - dmin - 2) / (hi - lo)  # lo → ≥ -32767, hi → ≤ 32767 after rounding
        gains.append(gain)
        baselines.append(int(round(-(lo + hi) / 2 * gain)))
    return gains, baselines
