"""Mechanical-ventilator waveforms: breath segmentation, per-record ventilation features, PB-840 reader.

Conventions: flow in L/min (positive = inspiration, into the patient), airway pressure (Paw) in
cmH2O, volumes in mL. Breaths are segmented from flow alone (no ventilator markers needed), so the
same code serves WFDB ventilator records and Puritan Bennett 840 text exports.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.sources.wfdb_io import WaveformReadError

VENTILATOR_FEATURE_KEYS: tuple[str, ...] = (
    "n_breaths",
    "resp_rate_bpm",
    "tidal_volume_insp_ml",
    "tidal_volume_exp_ml",
    "ie_ratio",
    "peep_cmh2o",
    "pip_cmh2o",
    "dynamic_compliance_ml_cmh2o",
    "minute_ventilation_l_min",
    "quality_flag",
    "quality_reason",
)

PB840_SAMPLING_RATE = 50.0  # Hz: the PB-840 waveform export writes one flow/pressure pair every 20 ms

# Breath detection thresholds (documented in breath_segments).
ONSET_MIN_L_MIN = 2.0
ONSET_FRACTION = 0.1
MIN_INSP_S = 0.1
MIN_VOLUME_FRACTION = 0.1
PEEP_LAST_S = 0.1  # PEEP = mean Paw over the last 0.1 s of expiration (ventMAP: last 5 samples at 50 Hz)
MIN_RATE_BPM, MAX_RATE_BPM = 4.0, 70.0  # median breath rate outside → not a ventilated patient's flow
MIN_VT_ML, MAX_VT_ML = 20.0, 3000.0  # median inspired volume outside → not a plausible flow signal
MIN_PEEP_CMH2O, MAX_PEEP_CMH2O, MAX_PIP_CMH2O = -5.0, 40.0, 120.0  # pressure channel plausibility
MIN_DRIVING_CMH2O = 1.0  # PIP − PEEP below this → compliance not defined for that breath


def _moving_average(x: np.ndarray, n: int) -> np.ndarray:
    if n <= 1:
        return x
    kernel = np.ones(n) / n
    return np.convolve(x, kernel, mode="same")


def breath_segments(flow: np.ndarray, sampling_rate: float) -> pd.DataFrame:
    """Segment a flow signal (L/min, + = inspiration) into breaths.

    Returns one row per complete breath with integer sample indices `start` (first inspiratory
    sample), `insp_end` (first expiratory sample) and `end` (exclusive; = next breath's start),
    plus `has_nan` (a NaN flow sample inside the breath). Method: flow is smoothed with a 60 ms
    moving average; an inspiration onset is a rise of the smoothed flow above max(2 L/min, 10 % of
    the 95th percentile of positive flow); the breath starts at the raw flow's upward zero crossing
    just before the onset and inspiration ends at the raw flow's next downward zero crossing.
    Candidate inspirations shorter than 0.1 s or with less than 10 % of the median inspired volume
    are merged into the expiration of the previous breath. The breath in progress at sample 0 and
    the trailing one without a following breath start are incomplete and not returned. NaN
    samples count as zero flow for detection.
    """
    x = np.asarray(flow, dtype=np.float64)
    fs = float(sampling_rate)
    empty = pd.DataFrame({"start": [], "insp_end": [], "end": [], "has_nan": []}).astype(
        {"start": "int64", "insp_end": "int64", "end": "int64", "has_nan": "bool"}
    )
    finite = np.isfinite(x)
    if len(x) < 3 or not finite.any():
        return empty
    f = _moving_average(np.where(finite, x, 0.0), max(1, int(round(0.06 * fs))))
    positive = f[f > 0]
    if positive.size == 0:
        return empty
    thr = max(ONSET_MIN_L_MIN, ONSET_FRACTION * float(np.percentile(positive, 95)))
    above = f > thr
    onsets = np.flatnonzero(~above[:-1] & above[1:]) + 1
    half = max(1, int(round(0.06 * fs))) // 2
    pos = np.where(finite, x, 0.0) > 0  # zero crossings of the raw flow give the exact phase bounds
    up = np.flatnonzero(~pos[:-1] & pos[1:]) + 1  # first sample with flow > 0
    down = np.flatnonzero(pos[:-1] & ~pos[1:]) + 1  # first sample with flow <= 0

    starts, ends_insp = [], []
    last_end = 0
    for onset in onsets:
        if onset < last_end:
            continue
        k = np.searchsorted(up, onset + half, side="right") - 1
        start = int(up[k]) if k >= 0 and up[k] >= last_end else int(onset)
        j = np.searchsorted(down, max(onset, start), side="right")
        if j >= len(down):
            break
        insp_end = int(down[j])
        starts.append(start)
        ends_insp.append(insp_end)
        last_end = insp_end
    if len(starts) < 2:
        return empty
    starts_a, insp_a = np.array(starts), np.array(ends_insp)
    # inspired volume of each candidate (mL) to drop tiny oscillations
    csum = np.concatenate(([0.0], np.cumsum(np.where(finite, x, 0.0))))
    vol = (csum[insp_a] - csum[starts_a]) / fs / 60.0 * 1000.0
    keep = ((insp_a - starts_a) / fs >= MIN_INSP_S) & (vol >= MIN_VOLUME_FRACTION * np.median(vol))
    starts_a, insp_a = starts_a[keep], insp_a[keep]
    if len(starts_a) < 2:
        return empty
    ends = starts_a[1:]
    starts_a, insp_a = starts_a[:-1], insp_a[:-1]
    nan_csum = np.concatenate(([0], np.cumsum(~finite)))
    has_nan = (nan_csum[ends] - nan_csum[starts_a]) > 0
    return pd.DataFrame({"start": starts_a, "insp_end": insp_a, "end": ends, "has_nan": has_nan}).astype(
        {"start": "int64", "insp_end": "int64", "end": "int64", "has_nan": "bool"}
    )


def breath_table(paw: np.ndarray | None, flow: np.ndarray, sampling_rate: float) -> pd.DataFrame:
    """Per-breath measurements: one row per complete breath without NaN flow.

    Columns: start, insp_end, end (samples); insp_time_s, exp_time_s; resp_rate_bpm = 60 / breath
    duration; tidal_volume_insp_ml = ∫ flow over inspiration, tidal_volume_exp_ml = −∫ flow over
    expiration (rectangle rule, flow L/min → mL); ie_ratio = insp_time / exp_time; pip_cmh2o = max
    Paw over the breath; peep_cmh2o = mean Paw over the last 0.1 s of expiration;
    dynamic_compliance_ml_cmh2o = VT_insp / (PIP − PEEP) (NaN when PIP − PEEP < 1 cmH2O).
    """
    x = np.asarray(flow, dtype=np.float64)
    fs = float(sampling_rate)
    seg = breath_segments(x, fs)
    seg = seg[~seg["has_nan"]].reset_index(drop=True)
    s, i, e = (seg[c].to_numpy() for c in ("start", "insp_end", "end"))
    csum = np.concatenate(([0.0], np.cumsum(np.where(np.isfinite(x), x, 0.0))))
    to_ml = 1000.0 / 60.0 / fs
    out = pd.DataFrame(
        {
            "start": s,
            "insp_end": i,
            "end": e,
            "insp_time_s": (i - s) / fs,
            "exp_time_s": (e - i) / fs,
            "resp_rate_bpm": 60.0 / ((e - s) / fs) if len(s) else np.zeros(0),
            "tidal_volume_insp_ml": (csum[i] - csum[s]) * to_ml,
            "tidal_volume_exp_ml": -(csum[e] - csum[i]) * to_ml,
        }
    )
    out["ie_ratio"] = out["insp_time_s"] / out["exp_time_s"]
    p = None if paw is None else np.asarray(paw, dtype=np.float64)
    if p is not None:
        p = np.where(np.isfinite(p), p, np.nan)  # ±inf is as invalid as NaN
    if p is not None and len(p) != len(x):
        raise ValueError(f"paw has {len(p)} samples, flow {len(x)}: they must be sampled together")
    if p is not None and np.isfinite(p).any():
        n_last = max(1, int(round(PEEP_LAST_S * fs)))
        pip, peep = np.full(len(s), np.nan), np.full(len(s), np.nan)
        for k in range(len(s)):
            seg_p = p[s[k] : e[k]]
            if np.isfinite(seg_p).any():
                pip[k] = np.nanmax(seg_p)
            tail = p[max(i[k], e[k] - n_last) : e[k]]
            if np.isfinite(tail).any():
                peep[k] = np.nanmean(tail)
        out["pip_cmh2o"], out["peep_cmh2o"] = pip, peep
    else:
        out["pip_cmh2o"], out["peep_cmh2o"] = np.nan, np.nan
    driving = out["pip_cmh2o"] - out["peep_cmh2o"]
    out["dynamic_compliance_ml_cmh2o"] = np.where(
        driving >= MIN_DRIVING_CMH2O, out["tidal_volume_insp_ml"] / driving, np.nan
    )
    return out


def _nan_features(reason: str) -> dict:
    out = {k: float("nan") for k in VENTILATOR_FEATURE_KEYS}
    out.update(n_breaths=0, quality_flag="no_signal", quality_reason=reason)
    return out


def ventilator_features(paw: np.ndarray | None, flow: np.ndarray, sampling_rate: float) -> dict:
    """Ventilation summary of one record: medians over complete breaths.

    Keys: n_breaths (complete breaths without NaN), resp_rate_bpm, tidal_volume_insp_ml,
    tidal_volume_exp_ml, ie_ratio, peep_cmh2o, pip_cmh2o, dynamic_compliance_ml_cmh2o (medians of
    the per-breath values of :func:`breath_table`), minute_ventilation_l_min = Σ VT_exp / Σ breath
    duration (L/min, exhaled, like a ventilator's VE), quality_flag, quality_reason.
    "no_signal" (NaN features, n_breaths 0): flow all NaN or flat (< 1 L/min range), no complete
    breath, median rate outside 4–70 /min ("implausible_rate") or median inspired volume outside
    20–3000 mL ("implausible_volume").
    "low_quality": fewer than 3 breaths ("few_breaths"), > 20 % NaN flow ("missing_samples"),
    no finite Paw ("no_pressure"), PEEP outside −5–40 or PIP above 120 cmH2O
    ("implausible_pressure"; pressure features set NaN), median VT_exp / VT_insp outside 0.5–1.5
    ("volume_mismatch", leak or flow-sensor drift).
    """
    x = np.asarray(flow, dtype=np.float64)
    fs = float(sampling_rate)
    finite = np.isfinite(x)
    if len(x) == 0 or not finite.any():
        return _nan_features("no_flow")
    if np.ptp(x[finite]) < 1.0:
        return _nan_features("flat_flow")
    table = breath_table(paw, x, fs)
    if table.empty:
        return _nan_features("no_breaths")
    med = table.median(numeric_only=True)
    out = {
        "n_breaths": int(len(table)),
        "resp_rate_bpm": float(med["resp_rate_bpm"]),
        "tidal_volume_insp_ml": float(med["tidal_volume_insp_ml"]),
        "tidal_volume_exp_ml": float(med["tidal_volume_exp_ml"]),
        "ie_ratio": float(med["ie_ratio"]),
        "peep_cmh2o": float(med["peep_cmh2o"]),
        "pip_cmh2o": float(med["pip_cmh2o"]),
        "dynamic_compliance_ml_cmh2o": float(med["dynamic_compliance_ml_cmh2o"]),
        "minute_ventilation_l_min": float(
            table["tidal_volume_exp_ml"].sum() / 1000.0 / ((table["end"] - table["start"]).sum() / fs / 60.0)
        ),
    }
    if not (MIN_RATE_BPM <= out["resp_rate_bpm"] <= MAX_RATE_BPM):
        return _nan_features("implausible_rate")
    if not (MIN_VT_ML <= out["tidal_volume_insp_ml"] <= MAX_VT_ML):
        return _nan_features("implausible_volume")
    reasons = []
    if not (MIN_PEEP_CMH2O <= out["peep_cmh2o"] <= MAX_PEEP_CMH2O and out["pip_cmh2o"] <= MAX_PIP_CMH2O):
        if np.isfinite(out["peep_cmh2o"]):
            reasons.append("implausible_pressure")
        out.update(peep_cmh2o=np.nan, pip_cmh2o=np.nan, dynamic_compliance_ml_cmh2o=np.nan)
    if len(table) < 3:
        reasons.append("few_breaths")
    if np.mean(~finite) > 0.2:
        reasons.append("missing_samples")
    if paw is None or not np.isfinite(np.asarray(paw, dtype=np.float64)).any():
        reasons.append("no_pressure")
    ratio = out["tidal_volume_exp_ml"] / out["tidal_volume_insp_ml"] if out["tidal_volume_insp_ml"] > 0 else np.nan
    if not (0.5 <= ratio <= 1.5):
        reasons.append("volume_mismatch")
    out["quality_flag"] = "low_quality" if reasons else "ok"
    out["quality_reason"] = ";".join(reasons)
    return {k: out[k] for k in VENTILATOR_FEATURE_KEYS}


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


def ventilator_simulate(
    duration: float = 60.0,
    sampling_rate: float = 50.0,
    *,
    resp_rate: float = 15.0,
    tidal_volume_ml: float = 500.0,
    peep_cmh2o: float = 5.0,
    ie_ratio: float = 0.5,
    compliance_ml_cmh2o: float = 50.0,
    resistance_cmh2o_l_s: float = 10.0,
    noise_l_min: float = 0.0,
    random_state: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate volume-controlled ventilation of a one-compartment lung; returns (paw, flow).

    Square inspiratory flow VT / Ti (Ti = period · I:E / (1 + I:E), period = 60 / resp_rate),
    passive exponential expiration with time constant τ = R · C; volume above FRC V(t) at steady
    state; Paw = PEEP + V / C + R · flow (equation of motion). Units: flow L/min (+ = inspiration),
    Paw cmH2O, R cmH2O/(L/s), C mL/cmH2O. Gaussian flow noise of SD `noise_l_min` if > 0.
    Ground truth for tests: VT, resp_rate, PEEP, I:E, PIP = PEEP + (VT + V_res)/C + R · VT/Ti and
    dynamic compliance VT / (PIP − PEEP).
    """
    fs = float(sampling_rate)
    t = np.arange(int(round(duration * fs))) / fs
    period = 60.0 / resp_rate
    ti = period * ie_ratio / (1.0 + ie_ratio)
    te = period - ti
    tau = resistance_cmh2o_l_s * compliance_ml_cmh2o / 1000.0  # s
    q = tidal_volume_ml / ti  # mL/s
    decay = np.exp(-te / tau)
    v_res = tidal_volume_ml * decay / (1.0 - decay)  # steady-state volume left at end-expiration
    phase = np.mod(t, period)
    insp = phase < ti
    vol = np.where(insp, v_res + q * phase, (v_res + tidal_volume_ml) * np.exp(-(phase - ti) / tau))
    flow_ml_s = np.where(insp, q, -(v_res + tidal_volume_ml) / tau * np.exp(-(phase - ti) / tau))
    paw = peep_cmh2o + vol / compliance_ml_cmh2o + resistance_cmh2o_l_s * flow_ml_s / 1000.0
    flow = flow_ml_s * 60.0 / 1000.0
    if noise_l_min > 0:
        flow = flow + np.random.default_rng(random_state).normal(0.0, noise_l_min, len(flow))
    return paw, flow
