"""Fitbit JSON exports (landing `waveforms/`): heart rate, per-minute steps/calories, sleep logs.

Layouts (as in ../shared/data/wearable/fitbit): a JSON array of `{"dateTime": "MM/DD/YY HH:MM:SS",
"value": ...}` where value is `{"bpm": int, "confidence": int}` for heart rate (irregular, ~5–15 s)
and a numeric string for steps / calories (one per minute, minutes without data omitted); sleep
logs are an array of sessions with ISO `startTime` / `endTime`. Every failure raises
WaveformReadError naming the file, never its contents.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.sources.wfdb_io import WaveformReadError

_FITBIT_TIME = "%m/%d/%y %H:%M:%S"


def _load(path: str | Path) -> list:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WaveformReadError(f"cannot read Fitbit export {path}: {type(exc).__name__}") from exc
    if not isinstance(data, list):
        raise WaveformReadError(f"Fitbit export {path}: expected a JSON array of entries")
    return data


def _times(path: Path, entries: list) -> pd.Series:
    try:
        return pd.to_datetime(pd.Series([e["dateTime"] for e in entries], dtype="object"), format=_FITBIT_TIME)
    except (KeyError, TypeError, ValueError) as exc:
        raise WaveformReadError(f"Fitbit export {path}: unreadable dateTime ({type(exc).__name__})") from exc


def read_fitbit_heart_rate(path: str | Path) -> pd.DataFrame:
    """Heart-rate export → columns time (datetime64), bpm (float), confidence (Int64: 0–3, Fitbit's
    own confidence; <NA> when absent), sorted by time. Empty array → empty frame."""
    entries = _load(path)
    if not entries:
        return pd.DataFrame({"time": pd.Series([], dtype="datetime64[ns]"), "bpm": [], "confidence": []})
    try:
        bpm = [float(e["value"]["bpm"]) for e in entries]
        conf = [e["value"].get("confidence") for e in entries]
    except (KeyError, TypeError, ValueError) as exc:
        raise WaveformReadError(f"Fitbit export {Path(path)}: not a heart-rate export ({type(exc).__name__})") from exc
    df = pd.DataFrame({"time": _times(Path(path), entries), "bpm": bpm,
                       "confidence": pd.array(conf, dtype="Int64")})
    return df.sort_values("time", kind="stable").reset_index(drop=True)


def read_fitbit_minutes(path: str | Path) -> pd.DataFrame:
    """Per-minute steps or calories export → columns time (datetime64, minute start), value (float),
    sorted by time. Minutes the export omits stay absent (callers decide what a gap means)."""
    entries = _load(path)
    if not entries:
        return pd.DataFrame({"time": pd.Series([], dtype="datetime64[ns]"), "value": []})
    try:
        values = [float(e["value"]) for e in entries]
    except (KeyError, TypeError, ValueError) as exc:
        raise WaveformReadError(f"Fitbit export {Path(path)}: not a per-minute export ({type(exc).__name__})") from exc
    df = pd.DataFrame({"time": _times(Path(path), entries), "value": np.asarray(values)})
    return df.sort_values("time", kind="stable").reset_index(drop=True)


def read_fitbit_sleep(path: str | Path) -> pd.DataFrame:
    """Sleep log export → one row per session: start, end (datetime64), minutes_asleep,
    minutes_awake, time_in_bed_min, efficiency (%)."""
    entries = _load(path)
    try:
        rows = [{"start": pd.Timestamp(e["startTime"]), "end": pd.Timestamp(e["endTime"]),
                 "minutes_asleep": float(e["minutesAsleep"]), "minutes_awake": float(e["minutesAwake"]),
                 "time_in_bed_min": float(e["timeInBed"]), "efficiency": float(e["efficiency"])} for e in entries]
    except (KeyError, TypeError, ValueError) as exc:
        raise WaveformReadError(f"Fitbit export {Path(path)}: not a sleep export ({type(exc).__name__})") from exc
    cols = ["start", "end", "minutes_asleep", "minutes_awake", "time_in_bed_min", "efficiency"]
    return pd.DataFrame(rows, columns=cols)
