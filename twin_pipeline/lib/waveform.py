"""Per-record waveform features: read a WFDB record, pick its channels by device kind, dispatch.

One entry point for the features layer: :func:`record_features` returns, for every record of a
device kind, the same ordered key set (:func:`feature_columns`), so per-record rows stack into one
table. A record that cannot be read raises WaveformReadError (the caller quarantines it); a record
that reads but lacks a usable signal returns NaN features with `quality_flag="no_signal"`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twin_pipeline.lib.ecg import ECG_FEATURE_KEYS, ecg_features
from twin_pipeline.lib.ventilator import VENTILATOR_FEATURE_KEYS, ventilator_features
from twin_pipeline.lib.wearable import WEARABLE_FEATURE_KEYS, wearable_features
from twin_pipeline.sources.wfdb_io import WaveformReadError, WaveformRecord, read_record

DEVICE_KINDS: tuple[str, ...] = ("ecg_monitor", "ventilator", "wearable")
RECORD_KEYS: tuple[str, ...] = ("duration_s", "sampling_rate_hz", "n_channels")

_DEVICE_KEYS = {
    "ecg_monitor": ECG_FEATURE_KEYS,
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
    fastest channel's rate). Channels: ecg_monitor → :func:`ecg_leads` into `ecg_features`;
    ventilator → Paw (cmH2O) and Flow (L/min; L/s converted) into `ventilator_features`;
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
        feats = ecg_features(leads, fs) if leads else _missing(keys, "missing_channel:ECG")
    elif device_kind == "ventilator":
        flow_name, paw_name = _find(rec, FLOW_NAMES), _find(rec, PAW_NAMES)
        if flow_name is None:
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


__all__ = ["DEVICE_KINDS", "WaveformReadError", "feature_columns", "record_features", "ecg_leads"]
