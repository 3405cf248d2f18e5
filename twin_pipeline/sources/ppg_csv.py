"""PPG (and other single-signal) CSV exports: one value column, optionally with a time column.

Layouts (../shared/data/wearable/ppg): a bare column of samples (the sampling rate must be given),
`timer,hr` (timer in ms from the start), `datetime,hr` (wall-clock timestamps, possibly repeated at
the clock's resolution); NaN / empty cells are gaps. :func:`read_signal_csv` returns (samples,
sampling_rate): with a time column the rate is (n − 1) / (last − first time), i.e. the mean rate;
the samples are taken as evenly spaced at that rate. Errors raise WaveformReadError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.sources.wfdb_io import WaveformReadError


def read_signal_csv(
    path: str | Path, sampling_rate: float | None = None, *, column: str | None = None
) -> tuple[np.ndarray, float]:
    """(float64 samples with NaN gaps, sampling rate in Hz) of a one-signal CSV (see module doc).

    `sampling_rate` is required for a bare column and, when given with a time column, overrides
    the rate derived from it. A first line `#samplerate,N` (rapidalarm test-lung exports) gives the
    rate; `column` then picks the named column (default: the last)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            first_line = fh.readline().strip()
        skip = 0
        if first_line.lower().startswith("#samplerate"):
            skip = 1
            if sampling_rate is None:
                sampling_rate = float(first_line.split(",")[1])
        df = pd.read_csv(path, header=None, dtype=str, skip_blank_lines=False, skiprows=skip)
    except (OSError, IndexError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise WaveformReadError(f"cannot read signal CSV {path}: {type(exc).__name__}") from exc
    first = df.iloc[0].astype(str).str.strip().tolist() if len(df) else []
    has_header = bool(first) and not _numeric(first[-1])
    names = [c.lower() for c in first] if has_header else []
    body = df.iloc[1:] if has_header else df
    pick = -1
    if column is not None:
        if column.lower() not in names:
            raise WaveformReadError(f"signal CSV {path}: no column {column!r}")
        pick = names.index(column.lower())
    values = pd.to_numeric(body.iloc[:, pick], errors="coerce").to_numpy(dtype=np.float64)
    if len(values) == 0 or not np.isfinite(values).any():
        raise WaveformReadError(f"signal CSV {path}: no numeric samples")
    fs = sampling_rate
    if fs is None and body.shape[1] >= 2 and column is None:
        col = body.iloc[:, 0]
        if names and names[0] in ("timer", "time_ms", "ms"):
            t = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64) / 1000.0
        else:
            t = (pd.to_datetime(col, errors="coerce") - pd.Timestamp(0)).dt.total_seconds().to_numpy()
        ok = np.isfinite(t)
        if ok.sum() >= 2 and t[ok][-1] > t[ok][0]:
            fs = (ok.sum() - 1) / (t[ok][-1] - t[ok][0])
    if fs is None or not fs > 0:
        raise WaveformReadError(f"signal CSV {path}: no time column, the sampling rate must be given")
    return values, float(fs)


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
