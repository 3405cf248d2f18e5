"""Per-record waveform features: read a WFDB record, pick its channels by device kind, dispatch.

One entry point for the features layer: :func:`record_features` returns, for every record of a
device kind, the same ordered key set (:func:`feature_columns`), so per-record rows stack into one
table. A record that cannot be read raises WaveformReadError (the caller quarantines it); a record
that reads but lacks a usable signal returns NaN features with `quality_flag="no_signal"`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from twin_pipeline.lib.ecg import ECG_FEATURE_KEYS, ecg_features
from twin_pipeline.lib.ventilator import VENTILATOR_FEATURE_KEYS, ventilator_features
from twin_pipeline.lib.wearable import PLETH_FEATURE_KEYS, WEARABLE_FEATURE_KEYS, pleth_features, wearable_features
from twin_pipeline.sources.wfdb_io import WaveformReadError, WaveformRecord, read_record

DEVICE_KINDS: tuple[str, ...] = ("ecg_monitor", "ventilator", "wearable")
RECORD_KEYS: tuple[str, ...] = ("duration_s", "sampling_rate_hz", "n_channels")

_DEVICE_KEYS = {
    "ecg_monitor": (*ECG_FEATURE_KEYS, *PLETH_FEATURE_KEYS),
    "ventilator": VENTILATOR_FEATURE_KEYS,
    "wearable": WEARABLE_FEATURE_KEYS,
}

# Channel names per role (case-insensitive), in preference order. The landing contract names are first.
ECG_LEAD_PREFERENCE = ("MLII", "V5", "II", "V", "I", "III", "V1", "V2", "V3", "V4", "V6", "AVR", "AVL", "AVF",
                       "MCL1", "ECG")
PAW_NAMES = ("Paw", "Pressure", "Pao", "Paw_cmH2O")
FLOW_NAMES = ("Flow", "Flow_L_min", "V'")
PPG_NAMES = ("PPG", "PLETH", "Pleth")
ACC_NAMES = ("ACC", "ACC_MAG", "Acc")

_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
_TO_L_MIN = {"l/min": 1.0, "lpm": 1.0, "l/s": 60.0, "ml/s": 0.06}


def feature_columns(device_kind: str) -> list[str]:
    """Ordered keys :func:`record_features` returns for `device_kind`:
    duration_s, sampling_rate_hz, n_channels, then the device's feature keys."""
    if device_kind not in _DEVICE_KEYS:
        raise ValueError(f"unknown device kind {device_kind!r}; expected one of {DEVICE_KINDS}")
    return [*RECORD_KEYS, *_DEVICE_KEYS[device_kind]]


def _find(rec: WaveformRecord, names: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in rec.sig_names}
    for want in names:
        if want.lower() in lower:
            return lower[want.lower()]
    return None


def _scaled(rec: WaveformRecord, channel: str, table: dict[str, float]) -> np.ndarray:
    """Channel samples converted to the target unit of `table` (unknown units left as they are)."""
    factor = table.get(rec.units_of(channel).strip().lower(), 1.0)
    x = rec.signals[channel]
    return x * factor if factor != 1.0 else x


def ecg_leads(rec: WaveformRecord) -> dict[str, np.ndarray]:
    """ECG leads in mV, primary first: MLII, V5, then other known lead names (ECG_LEAD_PREFERENCE);
    when no channel has a known lead name, every channel in a voltage unit (mV, uV, V), in record
    order (a respiration channel in mV is not taken when real leads exist)."""
    chosen: list[str] = []
    for want in ECG_LEAD_PREFERENCE:
        name = _find(rec, (want,))
        if name and name not in chosen:
            chosen.append(name)
    if not chosen:  # no known lead name: any channel in a voltage unit
        chosen = [n for n in rec.sig_names if rec.units_of(n).strip().lower() in _TO_MV]
    return {name: _scaled(rec, name, _TO_MV) for name in chosen}


def _missing(keys: tuple[str, ...], reason: str) -> dict:
    out: dict = {k: float("nan") for k in keys}
    for k in keys:
        if k.endswith("quality_flag"):
            out[k] = "no_signal"
        elif k.endswith("quality_reason"):
            out[k] = reason
        elif k in ("n_beats", "n_breaths", "active_minutes"):
            out[k] = 0
    return out


def record_features(record_path: str | Path, device_kind: str) -> dict:
    """Features of one WFDB record of `device_kind` (see DEVICE_KINDS), keys = feature_columns(kind).

    The record is read with `read_record(resample_to="fastest")` (mixed-rate records keep their
    fastest channel's rate). Channels: ecg_monitor → :func:`ecg_leads` into `ecg_features`, plus
    the PLETH/PPG channel (when there is one) into `pleth_features` (pleth_* keys; the record's
    quality_flag stays the ECG's, the pleth stream has its own flag and reason, "no_pleth_channel");
    ventilator → Paw (cmH2O) and Flow (L/min; L/s converted) into `ventilator_features` (Paw alone
    → `pressure_features`: volumes NaN, reason "pressure_only"; neither → "missing_channel:Flow");
    wearable → PPG and ACC (g) into `wearable_features`. A missing required channel gives NaN
    features with quality_flag "no_signal" and reason "missing_channel:<name>".
    Raises ValueError for an unknown device kind, WaveformReadError for an unreadable record.
    """
    if device_kind not in _DEVICE_KEYS:
        raise ValueError(
            f"record {Path(record_path).name}: unknown device kind {device_kind!r}; expected one of {DEVICE_KINDS}"
        )
    rec = read_record(record_path, resample_to="fastest")
    fs = rec.sampling_rate
    base = {"duration_s": float(rec.duration_s), "sampling_rate_hz": float(fs), "n_channels": len(rec.sig_names)}
    keys = _DEVICE_KEYS[device_kind]
    if device_kind == "ecg_monitor":
        leads = ecg_leads(rec)
        feats = ecg_features(leads, fs) if leads else _missing(ECG_FEATURE_KEYS, "missing_channel:ECG")
        pleth_name = _find(rec, PPG_NAMES)
        feats.update(pleth_features(rec.signals[pleth_name] if pleth_name else None, fs))
    elif device_kind == "ventilator":
        flow_name, paw_name = _find(rec, FLOW_NAMES), _find(rec, PAW_NAMES)
        if flow_name is None and paw_name is not None:  # pressure only: rate, PIP, PEEP, I:E, alarms
            from twin_pipeline.lib.ventilator import pressure_features

            feats = pressure_features(rec.signals[paw_name], fs)
        elif flow_name is None:
            feats = _missing(keys, "missing_channel:Flow")
        else:
            paw = rec.signals[paw_name] if paw_name else None
            feats = ventilator_features(paw, _scaled(rec, flow_name, _TO_L_MIN), fs)
    else:
        ppg_name, acc_name = _find(rec, PPG_NAMES), _find(rec, ACC_NAMES)
        nan = np.full(rec.n_samples, np.nan)
        feats = wearable_features(rec.signals[ppg_name] if ppg_name else nan,
                                  rec.signals[acc_name] if acc_name else nan, fs)
        if ppg_name is None:
            feats["ppg_quality_reason"] = "missing_channel:PPG"
        if acc_name is None:
            feats["activity_quality_reason"] = "missing_channel:ACC"
        if ppg_name is None or acc_name is None:
            feats["quality_reason"] = ";".join(
                f"{s}:{feats[f'{s}_quality_reason']}" for s in ("ppg", "activity") if feats[f"{s}_quality_reason"]
            )
    out = {**base, **feats}
    return {k: out[k] for k in feature_columns(device_kind)}


def infer_device_kind(rec: WaveformRecord) -> str:
    """"ventilator" when the record has a flow channel, "wearable" when it has PPG or ACC and no ECG
    lead, else "ecg_monitor" (bedside monitors carry ECG with PLETH/ABP/RESP)."""
    if _find(rec, FLOW_NAMES):
        return "ventilator"
    if (_find(rec, PPG_NAMES) or _find(rec, ACC_NAMES)) and not ecg_leads(rec):
        return "wearable"
    return "ecg_monitor"


def is_pb840_export(path: str | Path) -> bool:
    """True for a Puritan Bennett 840 text export (a file, not a WFDB record path)."""
    p = Path(path)
    return p.is_file() and p.suffix.lower() not in (".hea", ".dat", ".atr", ".mat")


def pb840_features(path: str | Path) -> dict:
    """Ventilator features (keys = feature_columns("ventilator")) of a PB-840 text export, breaths
    taken from the ventilator's BS/BE markers when the export has them, else from flow."""
    from twin_pipeline.lib.ventilator import breath_segments_from_markers, read_pb840

    df = read_pb840(path)
    fs = float(df.attrs["sampling_rate"])
    flow, paw = df["flow_l_min"].to_numpy(), df["pressure_cmh2o"].to_numpy()
    segments = None
    if df["breath_start"].any() and df["breath_end"].any():
        segments = breath_segments_from_markers(df["breath_start"], df["breath_end"], flow, fs)
        if len(segments) < 2:
            segments = None
    feats = ventilator_features(paw, flow, fs, segments=segments)
    out = {"duration_s": len(df) / fs, "sampling_rate_hz": fs, "n_channels": 2, **feats}
    return {k: out[k] for k in feature_columns("ventilator")}


def _blank(device_kind: str, reason: str, duration_s: float = float("nan"), fs: float = float("nan"),
           n_channels: int = 0) -> dict:
    out = {"duration_s": duration_s, "sampling_rate_hz": fs, "n_channels": n_channels,
           **_missing(_DEVICE_KEYS[device_kind], reason)}
    return out


def _head(path: Path, n: int = 20000) -> str:
    with path.open(encoding="ascii", errors="ignore") as fh:
        return fh.read(n)


def file_features(path: str | Path, device_kind: str | None = None, *, sampling_rate: float | None = None) -> dict:
    """Features of any supported waveform file, keys = feature_columns(kind) (+ extra keys for
    some sources), plus "device_kind".

    Dispatch: a WFDB record (`.hea` or a record path) → :func:`record_features` (kind inferred
    when None); a Fitbit JSON export → `fitbit_features` (heart-rate or steps file alone; a sleep
    log gives no_signal "sleep_log_only"); an ActiGraph / Actiwatch count CSV →
    `activity_count_features` (ActiGraph cut-points; Actiwatch counts at the same cut-points are
    only indicative); a PB-840 export → :func:`pb840_features`; any other CSV → a one-signal CSV
    (`sources.ppg_csv.read_signal_csv`; bare columns need `sampling_rate`) analysed as
    `device_kind` (default wearable = PPG; ecg_monitor = one ECG lead; ventilator: a named
    `pressure` column → `pressure_features` (breaths, rate, PIP, PEEP, I:E and alarms from airway
    pressure alone, reason "pressure_only"), or `ventilator_features` when a `flow` column is
    filled too; a bare column yields no_signal "missing_channel:Flow"). A stream the export lacks
    (PPG in a count CSV, activity in a PPG CSV) is named in that stream's reason and does not lower quality_flag. A raw
    accelerometer binary (Axivity .cwa, GENEActiv .bin, Matrix .BIN; `sources.raw_accelerometer`)
    → `raw_accelerometer_features` (ENMO activity; resting HR from the Matrix heart-rate channel;
    extra keys hr_mean_bpm, hr_minutes, raw_device). Raises WaveformReadError for unreadable or
    unsupported files (a truncated or corrupt binary included).
    """
    from twin_pipeline.lib.wearable import activity_count_features, fitbit_features, ppg_features
    from twin_pipeline.sources.accelerometer import read_activity_counts
    from twin_pipeline.sources.fitbit import read_fitbit_heart_rate, read_fitbit_minutes
    from twin_pipeline.sources.ppg_csv import read_signal_csv

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".hea" or (not p.exists() and p.with_suffix(p.suffix + ".hea").exists()) or (
            not p.exists() and Path(str(p) + ".hea").exists()):
        kind = device_kind or infer_device_kind(read_record(p, resample_to="fastest"))
        return {"device_kind": kind, **record_features(p, kind)}
    if suffix in (".cwa", ".bin"):
        from twin_pipeline.lib.wearable import raw_accelerometer_features
        from twin_pipeline.sources.raw_accelerometer import read_raw_accelerometer

        raw = read_raw_accelerometer(p)
        hr_s = None if raw.hr is None else (raw.hr.index - raw.start).total_seconds().to_numpy()
        feats = raw_accelerometer_features(raw.acc_g, raw.sampling_rate_hz, hr_time_s=hr_s,
                                           hr_bpm=None if raw.hr is None else raw.hr.to_numpy(), notes=raw.notes)
        return {"device_kind": "wearable", "duration_s": raw.duration_s, "sampling_rate_hz": raw.sampling_rate_hz,
                "n_channels": 3 + (raw.hr is not None), **feats, "raw_device": raw.device}
    if suffix == ".json":
        head = p.read_text(encoding="utf-8", errors="replace")[:400]
        if '"logId"' in head:
            return {"device_kind": "wearable", **_blank("wearable", "sleep_log_only")}
        if "calorie" in p.name.lower():
            return {"device_kind": "wearable", **_blank("wearable", "calories_export_only")}
        if '"bpm"' in head:
            hr = read_fitbit_heart_rate(p)
            return {"device_kind": "wearable", "duration_s": float((hr["time"].max() - hr["time"].min()).total_seconds()),
                    "sampling_rate_hz": float("nan"), "n_channels": 1, **fitbit_features(hr, None)}
        minutes = read_fitbit_minutes(p)
        return {"device_kind": "wearable", "duration_s": 60.0 * len(minutes), "sampling_rate_hz": 1 / 60,
                "n_channels": 1, **fitbit_features(None, minutes)}
    head = p.read_text(encoding="utf-8-sig", errors="replace")[:300].lower() if p.is_file() else ""
    if "actigraph" in head or "actiware" in head or "actiwatch" in head:
        counts = read_activity_counts(p)
        epoch = counts.attrs["epoch_s"]
        act = activity_count_features(counts["counts"].to_numpy(), epoch)
        out = _blank("wearable", "", len(counts) * epoch, 1.0 / epoch, 1)
        out.update({k: act[k] for k in ("activity_counts_per_min", "sedentary_fraction", "active_minutes")})
        out.update(activity_quality_flag=act["quality_flag"], activity_quality_reason=act["quality_reason"],
                   ppg_quality_reason="no_ppg_in_export", quality_flag=act["quality_flag"],
                   quality_reason=f"activity:{act['quality_reason']}" if act["quality_reason"] else "")
        return {"device_kind": "wearable", **out}
    if is_pb840_export(p) and "#samplerate" not in head and (
            device_kind == "ventilator" or (device_kind is None and re.search(r"^\s*BS\s*,", _head(p), re.M))):
        try:
            return {"device_kind": "ventilator", **pb840_features(p)}
        except WaveformReadError:
            if device_kind == "ventilator":
                raise
    kind = device_kind or "wearable"
    column = "pressure" if kind == "ventilator" and "pressure" in head else None
    x, fs = read_signal_csv(p, sampling_rate, column=column)
    base = {"duration_s": len(x) / fs, "sampling_rate_hz": fs, "n_channels": 1}
    if kind == "ecg_monitor":
        return {"device_kind": kind, **base, **ecg_features({"ECG": x}, fs), **pleth_features(None, fs)}
    if kind == "ventilator":
        from twin_pipeline.lib.ventilator import pressure_features

        if column != "pressure":
            return {"device_kind": kind, **_blank(kind, "missing_channel:Flow", base["duration_s"], fs, 1)}
        flow = None
        lines = [ln for ln in head.splitlines() if not ln.startswith("#")]
        if lines and "flow" in [c.strip() for c in lines[0].split(",")]:
            try:
                flow, _ = read_signal_csv(p, sampling_rate, column="flow")
            except WaveformReadError:  # header names flow but holds none (rapidalarm test-lung exports)
                flow = None
        if flow is not None:
            return {"device_kind": kind, **base, "n_channels": 2, **ventilator_features(x, flow, fs)}
        return {"device_kind": kind, **base, **pressure_features(x, fs)}
    ppg = ppg_features(x, fs)
    out = _blank("wearable", "", base["duration_s"], fs, 1)
    out.update(pulse_rate_bpm=ppg["pulse_rate_bpm"], prv_sdnn_ms=ppg["prv_sdnn_ms"], ppg_quality=ppg["ppg_quality"],
               ppg_quality_flag=ppg["quality_flag"], ppg_quality_reason=ppg["quality_reason"],
               activity_quality_reason="no_accelerometer_in_export", quality_flag=ppg["quality_flag"],
               quality_reason=f"ppg:{ppg['quality_reason']}" if ppg["quality_reason"] else "")
    return {"device_kind": "wearable", **out}


__all__ = ["DEVICE_KINDS", "file_features", "WaveformReadError", "feature_columns", "record_features", "ecg_leads",
           "infer_device_kind", "is_pb840_export", "pb840_features"]
