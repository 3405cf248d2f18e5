"""Puritan Bennett 840 ventilator waveform text exports (ventMAP layout), landing `waveforms/`.

Read with :func:`read_pb840`; breaths from its BS/BE markers with
`twin_pipeline.lib.ventilator.breath_segments_from_markers`.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.sources.wfdb_io import WaveformReadError

PB840_SAMPLING_RATE = 50.0  # Hz: the PB-840 waveform export writes one flow/pressure pair every 20 ms

_VENT_BN = re.compile(r"S:(\d+)")
_DATE_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}[- ]\d{2}[-:]\d{2}[-:]\d{2}(\.\d+)?$")


def _parse_pb840_time(text: str) -> dt.datetime | None:
    text = text.strip()
    for fmt in ("%Y-%m-%d-%H-%M-%S.%f", "%Y-%m-%d-%H-%M-%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(text[:26] if "." in text else text, fmt)
        except ValueError:
            continue
    return None


def read_pb840(path: str | Path) -> pd.DataFrame:
    """Read a Puritan Bennett 840 waveform text export (ventMAP layout) into one row per sample.

    Layout (see ../shared/data/ventilator/pb840): data rows `flow, pressure` (L/min, cmH2O, one
    every 20 ms), optionally preceded by a per-row timestamp column; a line `BS, S:<n>,` opens
    breath number n (as counted by the ventilator) and `BE` closes it; an optional line holding
    only a datetime (`2016-02-17-08-43-02.525325`) gives the clock of the next sample.

    Columns: time_s (s from the first sample, index × 0.02), timestamp (per-row timestamp, else
    header clock + index × 0.02 s, else NaT), flow_l_min, pressure_cmh2o, vent_bn (Int64 breath
    number of the enclosing BS…BE, <NA> outside), breath_start (first sample after BS),
    breath_end (last sample before BE). `df.attrs["sampling_rate"] = 50.0`.
    Raises WaveformReadError naming the file when it is missing or holds no data rows.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii", errors="ignore")
    except OSError as exc:
        raise WaveformReadError(f"cannot read PB-840 file {path}: {type(exc).__name__}") from exc
    flows: list[float] = []
    pressures: list[float] = []
    stamps: list[dt.datetime | None] = []
    bns: list[int] = []
    starts: list[bool] = []
    ends_at: list[int] = []
    clock: dt.datetime | None = None
    step = dt.timedelta(seconds=1.0 / PB840_SAMPLING_RATE)
    current_bn = -1
    pending_start = False
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        while cells and cells[-1] == "":
            cells.pop()
        if not cells:
            continue
        row_time = None
        if len(cells) >= 2 and cells[0][:1].isdigit() and not _is_number(cells[0]):
            row_time = _parse_pb840_time(cells[0])
            if row_time is not None:
                cells = cells[1:]
        if len(cells) == 1 and row_time is None and _DATE_LINE.match(cells[0]):
            clock = _parse_pb840_time(cells[0])
            continue
        if not cells:
            continue
        tag = cells[0]
        if tag == "BS":
            match = _VENT_BN.search(cells[1]) if len(cells) > 1 else None
            current_bn = int(match.group(1)) if match else -1
            pending_start = True
            continue
        if tag == "BE":
            if flows and current_bn != -2:
                ends_at.append(len(flows) - 1)
            current_bn = -2  # outside a breath
            pending_start = False
            continue
        if len(cells) < 2 or not (_is_number(cells[-2]) and _is_number(cells[-1])):
            continue
        flows.append(float(cells[-2]))
        pressures.append(float(cells[-1]))
        if row_time is not None:
            stamps.append(row_time)
        elif clock is not None:
            stamps.append(clock)
            clock = clock + step
        else:
            stamps.append(None)
        bns.append(current_bn if current_bn >= 0 else -1)
        starts.append(pending_start)
        pending_start = False
    if not flows:
        raise WaveformReadError(f"PB-840 file {path} holds no flow/pressure rows")
    n = len(flows)
    breath_end = np.zeros(n, dtype=bool)
    breath_end[[k for k in ends_at if 0 <= k < n]] = True
    df = pd.DataFrame(
        {
            "time_s": np.arange(n) / PB840_SAMPLING_RATE,
            "timestamp": pd.to_datetime(pd.Series(stamps, dtype="object"), errors="coerce"),
            "flow_l_min": np.asarray(flows, dtype=np.float64),
            "pressure_cmh2o": np.asarray(pressures, dtype=np.float64),
            "vent_bn": pd.array([b if b >= 0 else None for b in bns], dtype="Int64"),
            "breath_start": np.asarray(starts, dtype=bool),
            "breath_end": breath_end,
        }
    )
    df.attrs["sampling_rate"] = PB840_SAMPLING_RATE
    return df


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
