"""Accelerometer activity-count CSV exports (ActiGraph ActiLife, Philips Actiwatch / Actiware).

Both give one row per epoch (5–60 s) of device "counts" (not g). :func:`read_activity_counts`
detects the layout and returns one frame: time (datetime64, epoch start), counts (the primary
count: ActiGraph axis 1, Actiwatch activity), counts_vm (ActiGraph vector magnitude of the three
axes; NaN for Actiwatch), steps (when exported, else NaN), nonwear (Actiwatch off-wrist flag; False
for ActiGraph); `df.attrs["epoch_s"]` and `df.attrs["device"]`. Raw binary formats (.cwa, .bin)
are not count exports: WaveformReadError("unsupported"); they are read by
`twin_pipeline.sources.raw_accelerometer`. Errors name the file, never its contents.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.sources.wfdb_io import WaveformReadError

_ACTIWATCH_HEADERS = ({"line", "date", "time", "activity"}, {"lijn", "datum", "tijd", "activiteit"})
_OFF_WRIST = ("off-wrist status", "status niet-om-pols")
_EPOCH_LABELS = ("epoch length", "periodelengte")


def read_activity_counts(path: str | Path) -> pd.DataFrame:
    """Read an ActiGraph or Actiwatch count CSV (see module doc)."""
    path = Path(path)
    if path.suffix.lower() in (".cwa", ".bin"):
        raise WaveformReadError(
            f"accelerometer file {path}: unsupported raw binary format {path.suffix} for a count export "
            "(raw .cwa/.bin files are read by sources.raw_accelerometer)"
        )
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise WaveformReadError(f"cannot read accelerometer file {path}: {type(exc).__name__}") from exc
    first = text.lstrip()[:200].lower()
    if "actigraph" in first:
        return _read_actigraph(path, text)
    if "actiware" in first or "actiwatch" in first:
        return _read_actiwatch(path, text)
    raise WaveformReadError(f"accelerometer file {path}: not an ActiGraph or Actiwatch count export")


def _read_actigraph(path: Path, text: str) -> pd.DataFrame:
    lines = text.splitlines()
    header = "\n".join(lines[:12])
    m_time = re.search(r"Start Time\s+(\d{1,2}:\d{2}:\d{2})", header)
    m_date = re.search(r"Start Date\s+(\d{1,2}/\d{1,2}/\d{4})", header)
    m_epoch = re.search(r"Epoch Period \(hh:mm:ss\)\s+(\d{2}):(\d{2}):(\d{2})", header)
    if not (m_time and m_date and m_epoch):
        raise WaveformReadError(f"ActiGraph file {path}: header lacks start time, start date or epoch period")
    epoch_s = int(m_epoch.group(1)) * 3600 + int(m_epoch.group(2)) * 60 + int(m_epoch.group(3))
    fmt = "%d/%m/%Y" if "date format d/M/yyyy" in lines[0] else "%m/%d/%Y"
    start = dt.datetime.strptime(f"{m_date.group(1)} {m_time.group(1)}", f"{fmt} %H:%M:%S")
    sep = next((i for i, ln in enumerate(lines[:15]) if ln.startswith("-----") and i > 0), None)
    if sep is None or epoch_s <= 0:
        raise WaveformReadError(f"ActiGraph file {path}: no data section")
    body = [ln for ln in lines[sep + 1 :] if ln.strip(", ")]
    if body and not body[0].split(",")[0].strip().lstrip("-").replace(".", "").isdigit():
        body = body[1:]  # a column-name row
    try:
        arr = np.array([[float(c) if c.strip() else np.nan for c in ln.split(",")] for ln in body], dtype=float)
    except ValueError as exc:
        raise WaveformReadError(f"ActiGraph file {path}: non-numeric count row") from exc
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise WaveformReadError(f"ActiGraph file {path}: no count rows")
    n = arr.shape[0]
    axes = arr[:, : min(3, arr.shape[1])]
    df = pd.DataFrame({
        "time": pd.date_range(start, periods=n, freq=pd.Timedelta(seconds=epoch_s)),
        "counts": axes[:, 0],
        "counts_vm": np.sqrt(np.nansum(axes**2, axis=1)) if axes.shape[1] == 3 else np.nan,
        "steps": arr[:, 3] if arr.shape[1] > 3 else np.nan,
        "nonwear": np.zeros(n, dtype=bool),
    })
    df.attrs.update(epoch_s=float(epoch_s), device="actigraph")
    return df


def _read_actiwatch(path: Path, text: str) -> pd.DataFrame:
    rows = list(csv.reader(io.StringIO(text)))
    epoch_s = None
    for r in rows:
        if r and r[0].strip().rstrip(":").lower() in _EPOCH_LABELS and len(r) > 1:
            try:
                epoch_s = float(r[1])
            except ValueError:
                pass
    # the data table is the LAST header row naming line/date/time/activity (earlier ones are legends)
    head_idx = None
    for i, r in enumerate(rows):
        names = {c.strip().lower() for c in r if c.strip()}
        if any(h <= names for h in _ACTIWATCH_HEADERS):
            head_idx = i
    if head_idx is None or not epoch_s:
        raise WaveformReadError(f"Actiwatch file {path}: no epoch length or no epoch table")
    cols = [c.strip().lower() for c in rows[head_idx]]
    date_c = cols.index("date") if "date" in cols else cols.index("datum")
    time_c = cols.index("time") if "time" in cols else cols.index("tijd")
    act_c = cols.index("activity") if "activity" in cols else cols.index("activiteit")
    off_c = next((cols.index(c) for c in _OFF_WRIST if c in cols), None)
    times, counts, nonwear = [], [], []
    for r in rows[head_idx + 1 :]:
        if len(r) <= act_c or not r[date_c].strip():
            continue
        try:
            times.append(dt.datetime.strptime(f"{r[date_c].strip()} {r[time_c].strip()}", "%d/%m/%Y %H:%M:%S"))
        except ValueError:
            try:
                times.append(dt.datetime.strptime(f"{r[date_c].strip()} {r[time_c].strip()}", "%m/%d/%Y %H:%M:%S"))
            except ValueError:
                continue
        try:
            counts.append(float(r[act_c]))
        except ValueError:
            counts.append(np.nan)
        nonwear.append(off_c is not None and r[off_c].strip() == "1")
    if not times:
        raise WaveformReadError(f"Actiwatch file {path}: no epoch rows")
    c = np.asarray(counts)
    nw = np.asarray(nonwear)
    df = pd.DataFrame({"time": pd.to_datetime(times), "counts": np.where(nw, np.nan, c),
                       "counts_vm": np.nan, "steps": np.nan, "nonwear": nw})
    df.attrs.update(epoch_s=float(epoch_s), device="actiwatch")
    return df
