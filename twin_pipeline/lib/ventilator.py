"""Mechanical-ventilator waveforms: breath segmentation and per-record ventilation features.

Conventions: flow in L/min (positive = inspiration, into the patient), airway pressure (Paw) in
cmH2O, volumes in mL. Breaths are segmented from flow alone (no ventilator markers needed), so the
same code serves WFDB ventilator records and Puritan Bennett 840 text exports; when the export has
the ventilator's own breath markers, :func:`breath_segments_from_markers` uses them instead. The
per-breath definitions follow ventMAP (hahnicity/ventMAP, `breath_meta.py`, `SAM.py`): inspiration
ends at the flow zero crossing x0, PEEP is the mean pressure of the breath's last 0.1 s. Records
with airway pressure but no flow (emergency-ventilator alarm modules, test lungs) go through
:func:`pressure_features`: breaths, rate, PIP, PEEP, I:E and rapidalarm-style alarms from pressure
alone. The PB-840 reader lives in `twin_pipeline.sources.pb840` (re-exported here).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from twin_pipeline.sources.pb840 import PB840_SAMPLING_RATE, read_pb840  # noqa: F401  (re-exported)

VENTILATOR_FEATURE_KEYS: tuple[str, ...] = (
    "n_breaths",
    "resp_rate_bpm",
    "tidal_volume_insp_ml",
    "tidal_volume_exp_ml",
    "ie_ratio",
    "peep_cmh2o",
    "pip_cmh2o",
    "dynamic_compliance_ml_cmh2o",
    "compliance_lsf_ml_cmh2o",
    "resistance_lsf_cmh2o_l_s",
    "minute_ventilation_l_min",
    "alarm_fraction",
    "quality_flag",
    "quality_reason",
)


# Breath detection thresholds (documented in breath_segments).
ONSET_MIN_L_MIN = 2.0
ONSET_FRACTION = 0.1
MIN_INSP_S = 0.1
RAMP_L_MIN_S = 25.0  # flow rising faster than this (L/min per s) = the ventilator delivering a breath
X0_NEG_L_MIN = -5.0  # ventMAP x0: flow this negative right after the zero crossing = real expiration
MIN_VOLUME_FRACTION = 0.1
PEEP_LAST_S = 0.1  # PEEP = mean Paw over the last 0.1 s of the breath (ventMAP: last 5 samples at 50 Hz)
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

    Returns one row per complete breath with integer sample indices `start` (breath start),
    `insp_end` (first expiratory sample, ventMAP's xf) and `end` (exclusive; = next breath's
    start), plus `has_nan` (a NaN flow sample inside the breath). NaN samples count as zero flow.

    Method: flow is smoothed with a 60 ms moving average; an inspiration onset is a rise of the
    smoothed flow above max(2 L/min, 10 % of the 95th percentile of positive flow). The breath
    starts at the foot of the inspiratory flow ramp: walking back from the onset on the raw flow
    while it rises faster than 25 L/min/s (:data:`RAMP_L_MIN_S`), but never before the raw flow's
    last upward zero crossing. A ventilator triggered by the patient shows a slow pre-trigger
    creep of flow (patient effort, ~0–1 L/min for up to seconds) before the fast ramp of the
    delivered breath: the foot of the ramp is where the ventilator opens the breath (its BS
    marker), whereas the zero crossing would put the breath start at the beginning of the creep.
    Candidate inspirations shorter than 0.1 s or with less than 10 % of the median inspired volume
    (start to the next downward zero crossing) are merged into the expiration of the previous
    breath. Inspiration then ends at :func:`inspiration_end` inside [start, end). The breath in
    progress at sample 0 and the trailing one without a following breath start are incomplete
    and not returned.
    """
    x = np.asarray(flow, dtype=np.float64)
    fs = float(sampling_rate)
    empty = pd.DataFrame({"start": [], "insp_end": [], "end": [], "has_nan": []}).astype(
        {"start": "int64", "insp_end": "int64", "end": "int64", "has_nan": "bool"}
    )
    finite = np.isfinite(x)
    if len(x) < 3 or not finite.any():
        return empty
    xf = np.where(finite, x, 0.0)
    f = _moving_average(xf, max(1, int(round(0.06 * fs))))
    positive = f[f > 0]
    if positive.size == 0:
        return empty
    thr = max(ONSET_MIN_L_MIN, ONSET_FRACTION * float(np.percentile(positive, 95)))
    above = f > thr
    onsets = np.flatnonzero(~above[:-1] & above[1:]) + 1
    pos = xf > 0  # zero crossings of the raw flow bound the phases
    up = np.flatnonzero(~pos[:-1] & pos[1:]) + 1  # first sample with flow > 0
    down = np.flatnonzero(pos[:-1] & ~pos[1:]) + 1  # first sample with flow <= 0
    steep = np.concatenate(([False], np.diff(xf) * fs > RAMP_L_MIN_S))  # steep[k]: x[k] − x[k−1] fast rise

    starts, ends_insp = [], []
    last_end = 0
    for onset in onsets:
        if onset < last_end:
            continue
        # raw flow may cross zero a few samples after the smoothed onset: search up to onset + window
        search_to = min(len(xf) - 1, onset + max(1, int(round(0.06 * fs))) // 2)
        k = np.searchsorted(up, search_to, side="right") - 1
        zc = int(up[k]) if k >= 0 and up[k] >= last_end else int(onset)
        start = max(zc, int(onset))
        while start > zc and steep[start]:
            start -= 1
        j = np.searchsorted(down, max(onset, start), side="right")
        if j >= len(down):
            break
        starts.append(start)
        ends_insp.append(int(down[j]))
        last_end = int(down[j])
    if len(starts) < 2:
        return empty
    starts_a, insp_a = np.array(starts), np.array(ends_insp)
    # inspired volume of each candidate (mL) to drop tiny oscillations
    csum = np.concatenate(([0.0], np.cumsum(xf)))
    vol = (csum[insp_a] - csum[starts_a]) / fs / 60.0 * 1000.0
    keep = ((insp_a - starts_a) / fs >= MIN_INSP_S) & (vol >= MIN_VOLUME_FRACTION * np.median(vol))
    starts_a = starts_a[keep]
    if len(starts_a) < 2:
        return empty
    ends = starts_a[1:]
    starts_a = starts_a[:-1]
    insp_a = np.array([inspiration_end(xf, a, b, fs) for a, b in zip(starts_a, ends)], dtype=np.int64)
    nan_csum = np.concatenate(([0], np.cumsum(~finite)))
    has_nan = (nan_csum[ends] - nan_csum[starts_a]) > 0
    return pd.DataFrame({"start": starts_a, "insp_end": insp_a, "end": ends, "has_nan": has_nan}).astype(
        {"start": "int64", "insp_end": "int64", "end": "int64", "has_nan": "bool"}
    )


def inspiration_end(flow: np.ndarray, start: int, end: int, sampling_rate: float) -> int:
    """End of inspiration (first expiratory sample, ventMAP's xf) of the breath [start, end).

    Two candidates, as ventMAP's `SAM.find_x0s_multi_algorithms` / `x0_heuristic`: x01 = the first
    downward zero crossing (≥ 0 then < 0) after which flow stays negative for 0.1 s or reaches
    −5 L/min within 0.06 s (ventMAP's four clauses, in 20 ms steps; a brief dip to zero during
    inspiration does not end it); x02 = the end of the positive-flow run with the largest inspired
    volume. The later one wins; `end` when flow never turns. `flow` in L/min, NaN-free (NaN
    counted as 0 by the caller).
    """
    seg = flow[start:end]
    n = len(seg)
    if n < 2:
        return end
    fs = float(sampling_rate)
    # x02: end of the largest positive run
    pos = seg > 0
    edges = np.flatnonzero(np.diff(np.concatenate(([False], pos, [False])).astype(np.int8)))
    run_starts, run_ends = edges[::2], edges[1::2]
    x02 = n
    if len(run_starts):
        csum = np.concatenate(([0.0], np.cumsum(seg)))
        best = int(np.argmax(csum[run_ends] - csum[run_starts]))
        x02 = int(run_ends[best])
    # x01: first robust downward zero crossing
    step = max(1, int(round(0.02 * fs)))  # ventMAP's clauses count 20 ms samples
    padded = np.concatenate((seg, np.full(5 * step, np.nan)))  # NaN compares False: no crossing past `end`
    x01 = n
    for j in np.flatnonzero((seg[:-1] >= 0) & (seg[1:] < 0)) + 1:
        nxt, third = padded[j + step], padded[j + 3 * step]
        if ((padded[j] <= X0_NEG_L_MIN and nxt < 0) or nxt <= X0_NEG_L_MIN or third <= X0_NEG_L_MIN
                or (padded[j : j + 5 * step] < 0).all()):
            x01 = int(j)
            break
    return start + min(max(x01, x02), n)


def breath_segments_from_markers(
    breath_start: np.ndarray, breath_end: np.ndarray, flow: np.ndarray, sampling_rate: float
) -> pd.DataFrame:
    """Breaths from the ventilator's own markers (PB-840 `BS`/`BE`, see :func:`read_pb840`).

    `breath_start` / `breath_end`: boolean per sample (first sample after BS, last sample before
    BE). A breath is [BS sample, BE sample] (`end` exclusive = BE sample + 1); inspiration ends at
    :func:`inspiration_end` (ventMAP's x0), or at the breath end when flow never turns. Same
    columns as :func:`breath_segments`.
    A BS without a following BE (truncated export) is dropped.
    """
    x = np.asarray(flow, dtype=np.float64)
    fs = float(sampling_rate)
    bs = np.flatnonzero(np.asarray(breath_start, dtype=bool))
    be = np.flatnonzero(np.asarray(breath_end, dtype=bool))
    starts, insp, ends = [], [], []
    xf = np.where(np.isfinite(x), x, 0.0)
    for k, a in enumerate(bs):
        nxt = bs[k + 1] if k + 1 < len(bs) else len(x)
        j = np.searchsorted(be, a)
        if j >= len(be) or be[j] >= nxt:
            continue
        end = int(be[j]) + 1
        starts.append(int(a))
        insp.append(inspiration_end(xf, int(a), end, fs))
        ends.append(end)
    finite = np.isfinite(x)
    nan_csum = np.concatenate(([0], np.cumsum(~finite)))
    s_a, i_a, e_a = (np.asarray(v, dtype=np.int64) for v in (starts, insp, ends))
    has_nan = (nan_csum[e_a] - nan_csum[s_a]) > 0 if len(s_a) else np.zeros(0, dtype=bool)
    return pd.DataFrame({"start": s_a, "insp_end": i_a, "end": e_a, "has_nan": has_nan}).astype(
        {"start": "int64", "insp_end": "int64", "end": "int64", "has_nan": "bool"}
    )


def breath_table(
    paw: np.ndarray | None, flow: np.ndarray, sampling_rate: float, *, segments: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per-breath measurements: one row per complete breath without NaN flow.

    `segments`: breaths to measure (columns of :func:`breath_segments`, e.g. from
    :func:`breath_segments_from_markers`); default: segmented from flow by :func:`breath_segments`.

    Columns: start, insp_end, end (samples); insp_time_s, exp_time_s; resp_rate_bpm = 60 / breath
    duration; tidal_volume_insp_ml = ∫ flow over inspiration, tidal_volume_exp_ml = −∫ flow over
    expiration (rectangle rule, flow L/min → mL); ie_ratio = insp_time / exp_time (NaN without
    expiration); pip_cmh2o = max Paw over the breath; peep_cmh2o = mean Paw over the last 0.1 s
    of the breath (end-expiration, just before the next breath starts; ventMAP: the last 5
    samples before BE);
    dynamic_compliance_ml_cmh2o = VT_insp / (PIP − PEEP) (NaN when PIP − PEEP < 1 cmH2O);
    compliance_lsf_ml_cmh2o, resistance_lsf_cmh2o_l_s: least-squares fit of Paw − PEEP = V/C + R·V'
    over inspiration (static compliance and airway resistance, see :func:`_lsf_mechanics`).
    """
    x = np.asarray(flow, dtype=np.float64)
    fs = float(sampling_rate)
    seg = breath_segments(x, fs) if segments is None else segments
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
    # a breath whose flow never turns negative has no expiration: I:E undefined (NaN, not inf)
    out["ie_ratio"] = out["insp_time_s"] / out["exp_time_s"].where(out["exp_time_s"] > 0)
    p = None if paw is None else np.asarray(paw, dtype=np.float64)
    if p is not None:
        p = np.where(np.isfinite(p), p, np.nan)  # ±inf is as invalid as NaN
    if p is not None and len(p) != len(x):
        raise ValueError(f"paw has {len(p)} samples, flow {len(x)}: they must be sampled together")
    if p is not None and np.isfinite(p).any():
        pip, peep = _pip_peep(p, s, e, fs)
        out["pip_cmh2o"], out["peep_cmh2o"] = pip, peep
        out["compliance_lsf_ml_cmh2o"], out["resistance_lsf_cmh2o_l_s"] = _lsf_mechanics(p, x, s, i, peep, fs)
    else:
        out["pip_cmh2o"], out["peep_cmh2o"] = np.nan, np.nan
        out["compliance_lsf_ml_cmh2o"], out["resistance_lsf_cmh2o_l_s"] = np.nan, np.nan
    driving = out["pip_cmh2o"] - out["peep_cmh2o"]
    out["dynamic_compliance_ml_cmh2o"] = np.where(
        driving >= MIN_DRIVING_CMH2O, out["tidal_volume_insp_ml"] / driving, np.nan
    )
    return out


def _pip_peep(paw: np.ndarray, starts: np.ndarray, ends: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-breath PIP = max Paw over [start, end) and PEEP = mean Paw over the last 0.1 s of the
    breath (cmH2O; NaN where the samples are all NaN)."""
    n_last = max(1, int(round(PEEP_LAST_S * fs)))
    pip, peep = np.full(len(starts), np.nan), np.full(len(starts), np.nan)
    for k, (a, b) in enumerate(zip(starts, ends)):
        seg_p = paw[a:b]
        if np.isfinite(seg_p).any():
            pip[k] = np.nanmax(seg_p)
        tail = paw[max(a, b - n_last) : b]
        if np.isfinite(tail).any():
            peep[k] = np.nanmean(tail)
    return pip, peep


def _lsf_mechanics(paw: np.ndarray, flow: np.ndarray, starts: np.ndarray, insp_ends: np.ndarray,
                   peep: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-breath compliance (mL/cmH2O) and resistance (cmH2O/(L/s)) by least-squares fit of the
    single-compartment equation of motion over inspiration: Paw − PEEP = V / C + R · V'
    (V = volume since breath start in mL, V' = flow in L/s). NaN when the fit has < 5 finite
    samples or gives C ≤ 0 or R < 0."""
    comp, res = np.full(len(starts), np.nan), np.full(len(starts), np.nan)
    to_ml = 1000.0 / 60.0 / fs
    for k, (a, b) in enumerate(zip(starts, insp_ends)):
        f, p = flow[a:b], paw[a:b]
        ok = np.isfinite(f) & np.isfinite(p)
        if ok.sum() < 5 or not np.isfinite(peep[k]):
            continue
        vol = np.cumsum(np.where(np.isfinite(f), f, 0.0)) * to_ml
        design = np.column_stack([vol[ok], f[ok] / 60.0])
        coef, *_ = np.linalg.lstsq(design, p[ok] - peep[k], rcond=None)
        if coef[0] > 0 and coef[1] >= 0:
            comp[k], res[k] = 1.0 / coef[0], coef[1]
    return comp, res


def _nan_features(reason: str) -> dict:
    out = {k: float("nan") for k in VENTILATOR_FEATURE_KEYS}
    out.update(n_breaths=0, quality_flag="no_signal", quality_reason=reason)
    return out


def ventilator_features(
    paw: np.ndarray | None, flow: np.ndarray, sampling_rate: float, *, segments: pd.DataFrame | None = None
) -> dict:
    """Ventilation summary of one record: medians over complete breaths.

    `segments`: optional breath bounds (e.g. the ventilator's markers), see :func:`breath_table`.

    Keys: n_breaths (complete breaths without NaN), resp_rate_bpm, tidal_volume_insp_ml,
    tidal_volume_exp_ml, ie_ratio, peep_cmh2o, pip_cmh2o, dynamic_compliance_ml_cmh2o (medians of
    the per-breath values of :func:`breath_table`), compliance_lsf_ml_cmh2o and
    resistance_lsf_cmh2o_l_s (medians of the per-breath least-squares equation-of-motion fit),
    minute_ventilation_l_min = Σ VT_exp / Σ breath duration (L/min, exhaled, like a ventilator's
    VE), alarm_fraction (fraction of seconds with a :func:`pressure_alarms` alarm, from Paw; NaN
    without a usable Paw), quality_flag, quality_reason.
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
    table = breath_table(paw, x, fs, segments=segments)
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
        "compliance_lsf_ml_cmh2o": float(med["compliance_lsf_ml_cmh2o"]),
        "resistance_lsf_cmh2o_l_s": float(med["resistance_lsf_cmh2o_l_s"]),
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
        out.update(peep_cmh2o=np.nan, pip_cmh2o=np.nan, dynamic_compliance_ml_cmh2o=np.nan,
                   compliance_lsf_ml_cmh2o=np.nan, resistance_lsf_cmh2o_l_s=np.nan)
    out["alarm_fraction"] = float("nan")
    if np.isfinite(out["peep_cmh2o"]):
        alarms = pressure_alarms(np.asarray(paw, dtype=np.float64), fs)
        out["alarm_fraction"] = float(alarms["alarm"].mean()) if len(alarms) else float("nan")
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


# ---------------------------------------------------------------------------------------------
# Pressure-only records (airway pressure without flow: emergency-ventilator alarm modules such as
# rapidalarm, test-lung recordings). Breaths, rate, PIP, PEEP and I:E come from the pressure
# waveform; volumes and mechanics cannot (NaN, reason "pressure_only"). Alarms follow rapidalarm's
# firmware thresholds (github.com/rapidalarm/rapidalarm, code/firmware/algorithm.c).

PRESSURE_SMOOTH_S = 0.08  # moving average (after a 3-sample median that removes single-sample spikes)
MIN_SWING_CMH2O = 3.0  # a breath rises ≥ 3 cmH2O above its trough (rapidalarm THRESH_DIFF) …
SWING_FRACTION = 0.2  # … and ≥ 20 % of the record's 90th-percentile breath swing
MIN_BREATH_INTERVAL_S = 0.25  # pressure peaks closer than this are one breath (≤ 240 /min)
FOOT_FRACTION = 0.1  # breath start = where Paw rises above trough + 10 % of the swing for good
INSP_END_FRACTION = 0.4  # inspiration ends when Paw falls below PIP − 40 % of the swing (ventMAP
#                          SAM.calc_pressure_itime_from_front, frac 0.4)
ALARM_WINDOW_S = 1.0  # alarms are evaluated once per second, on the samples up to the window's end
APNEA_S = 10.0  # no breath start for 10 s: rapidalarm's non-cycling alarm (THRESH_NC; = rate < 6 /min, THRESH_LR)
HIGH_RATE_BPM = 35.0  # median rate of the breaths of the last 10 s above this: rapidalarm THRESH_HR
LOW_PRESSURE_DROP_CMH2O = 3.0  # 1-s median Paw ≥ max(3 cmH2O, 25 % of PEEP) below the record's PEEP
ALARM_KINDS: tuple[str, ...] = ("low_pressure", "apnea", "high_rate")


def _smooth_edges(x: np.ndarray, n: int) -> np.ndarray:
    """Centred moving average of n samples, edges padded with the edge value (no fake troughs)."""
    if n <= 1 or len(x) == 0:
        return x
    padded = np.pad(x, (n // 2, n - 1 - n // 2), mode="edge")
    return np.convolve(padded, np.ones(n) / n, mode="valid")


def _pressure_breaths(paw: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(median-filtered Paw, smoothed Paw — NaN gaps bridged in both —, peak samples, trough
    samples, foot samples) of every pressure breath; foot = −1 when the rise is cut by the record
    start."""
    from scipy.ndimage import median_filter
    from scipy.signal import find_peaks

    p = np.asarray(paw, dtype=np.float64)
    finite = np.isfinite(p)
    none = np.zeros(0, dtype=np.int64)
    if finite.sum() < 3:
        return p, p, none, none, none
    idx = np.arange(len(p))
    filled = np.interp(idx, idx[finite], p[finite])  # NaN gaps bridged for detection only
    pm = median_filter(filled, size=3, mode="nearest")
    ps = _smooth_edges(pm, max(1, int(round(PRESSURE_SMOOTH_S * fs))))
    peaks, props = find_peaks(ps, prominence=MIN_SWING_CMH2O, distance=max(1, int(round(MIN_BREATH_INTERVAL_S * fs))))
    if len(peaks):
        prom = props["prominences"]
        peaks = peaks[prom >= max(MIN_SWING_CMH2O, SWING_FRACTION * float(np.percentile(prom, 90)))]
    troughs, feet = np.zeros(len(peaks), dtype=np.int64), np.zeros(len(peaks), dtype=np.int64)
    prev = 0
    for k, pk in enumerate(peaks):
        lo = prev + int(np.argmin(ps[prev : pk + 1]))
        level = ps[lo] + FOOT_FRACTION * (ps[pk] - ps[lo])
        troughs[k] = lo
        # levels from the smoothed trace, crossing on the median-filtered one (keeps step edges sharp)
        feet[k] = lo + int(np.flatnonzero(pm[lo : pk + 1] <= level)[-1]) + 1 if (lo > 0 or k > 0) else -1
        prev = int(pk)
    return pm, ps, peaks.astype(np.int64), troughs, feet


def pressure_breath_segments(paw: np.ndarray, sampling_rate: float) -> pd.DataFrame:
    """Segment an airway-pressure signal (cmH2O) into breaths without flow.

    Same columns as :func:`breath_segments` (start, insp_end, end exclusive = next start,
    has_nan). Method: Paw is cleaned by a 3-sample median and a 80 ms moving average; a breath is
    a pressure peak with prominence ≥ max(3 cmH2O, 20 % of the record's 90th-percentile
    prominence), peaks ≥ 0.25 s apart. The breath starts where pressure rises above PEEP +
    threshold for good: the sample after the last one before the peak at ≤ trough + 10 % of
    (peak − trough), the trough being the lowest smoothed pressure since the previous peak; the
    inspiration ends at the first sample after the peak below PIP − 40 % of (PIP − trough)
    (crossings on the median-filtered trace, which keeps step edges sharp). A rise cut by the
    record start and the last breath (no following start) are incomplete and not returned.
    NaN samples are bridged for detection and flagged in has_nan.
    """
    p = np.asarray(paw, dtype=np.float64)
    return _pressure_segments(p, *_pressure_breaths(p, float(sampling_rate)))


def _pressure_segments(p: np.ndarray, pm: np.ndarray, ps: np.ndarray, peaks: np.ndarray, troughs: np.ndarray,
                       feet: np.ndarray) -> pd.DataFrame:
    rows = []
    for k in range(len(peaks) - 1):
        a, b = int(feet[k]), int(feet[k + 1])
        if a < 0 or b <= a:
            continue
        pk, lo = int(peaks[k]), int(troughs[k])
        below = np.flatnonzero(pm[pk:b] < ps[pk] - INSP_END_FRACTION * (ps[pk] - ps[lo]))
        rows.append((a, pk + int(below[0]) if len(below) else b, b))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
    nan_csum = np.concatenate(([0], np.cumsum(~np.isfinite(p))))
    has_nan = (nan_csum[arr[:, 2]] - nan_csum[arr[:, 0]]) > 0
    return pd.DataFrame({"start": arr[:, 0], "insp_end": arr[:, 1], "end": arr[:, 2], "has_nan": has_nan}).astype(
        {"start": "int64", "insp_end": "int64", "end": "int64", "has_nan": "bool"}
    )


def pressure_breath_table(paw: np.ndarray, sampling_rate: float) -> pd.DataFrame:
    """Per-breath measurements from airway pressure alone: one row per complete breath of
    :func:`pressure_breath_segments` without NaN. Columns: start, insp_end, end (samples);
    insp_time_s, exp_time_s, resp_rate_bpm (60 / breath duration), ie_ratio, pip_cmh2o (max of the
    3-sample-median Paw over the breath), peep_cmh2o (its mean over the last 0.1 s of the breath)."""
    fs = float(sampling_rate)
    p = np.asarray(paw, dtype=np.float64)
    detected = _pressure_breaths(p, fs)
    return _pressure_table(p, detected[0], _pressure_segments(p, *detected), fs)


def _pressure_table(p: np.ndarray, pm: np.ndarray, seg: pd.DataFrame, fs: float) -> pd.DataFrame:
    pm = np.where(np.isfinite(p), pm, np.nan)
    seg = seg[~seg["has_nan"]].reset_index(drop=True)
    s, i, e = (seg[c].to_numpy() for c in ("start", "insp_end", "end"))
    out = pd.DataFrame({"start": s, "insp_end": i, "end": e, "insp_time_s": (i - s) / fs, "exp_time_s": (e - i) / fs})
    out["resp_rate_bpm"] = 60.0 / ((e - s) / fs) if len(s) else np.zeros(0)
    out["ie_ratio"] = out["insp_time_s"] / out["exp_time_s"].where(out["exp_time_s"] > 0)
    out["pip_cmh2o"], out["peep_cmh2o"] = _pip_peep(pm, s, e, fs)
    return out


def pressure_alarms(paw: np.ndarray, sampling_rate: float) -> pd.DataFrame:
    """Per-second alarm states from airway pressure, in the spirit of rapidalarm (thresholds of its
    firmware), evaluated causally on the samples up to each 1-s window's end.

    One row per whole second: t_s (window start, s) and booleans
    low_pressure — disconnect / leak: the window's median Paw is ≥ max(3 cmH2O, 25 % of PEEP)
    below the record's PEEP (median end-expiratory pressure of its breaths of ≤ 10 s): pressure
    has collapsed below PEEP, the circuit is open;
    apnea — no breath has started for > 10 s (rapidalarm's non-cycling alarm, = rate < 6 /min;
    counted from the record start before the first breath);
    high_rate — the duration-weighted median rate of the ≥ 2 complete breaths of the last 10 s
    exceeds 35 /min;
    alarm — any of them. Empty when the record is shorter than 1 s.
    """
    fs = float(sampling_rate)
    p = np.asarray(paw, dtype=np.float64)
    detected = _pressure_breaths(p, fs)
    table = _pressure_table(p, detected[0], _pressure_segments(p, *detected), fs)
    return _pressure_alarms(p, fs, detected[4], table)


def _pressure_alarms(p: np.ndarray, fs: float, feet: np.ndarray, table: pd.DataFrame) -> pd.DataFrame:
    w = max(1, int(round(ALARM_WINDOW_S * fs)))
    n_win = len(p) // w
    cols = ["t_s", *ALARM_KINDS, "alarm"]
    if n_win == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "t_s" else "bool") for c in cols})
    peep_ref = _pressure_summary(table, fs)["peep_cmh2o"]
    t_end = (np.arange(n_win) + 1) * w / fs
    med = pd.DataFrame(p[: n_win * w].reshape(n_win, w)).median(axis=1, skipna=True).to_numpy()
    limit = peep_ref - max(LOW_PRESSURE_DROP_CMH2O, 0.25 * peep_ref) if np.isfinite(peep_ref) else -np.inf
    low = np.nan_to_num(med, nan=np.inf) < limit
    starts_t = np.sort(feet[feet >= 0]) / fs
    k = np.searchsorted(starts_t, t_end, side="right") - 1
    last = np.where(k >= 0, starts_t[np.clip(k, 0, None)] if len(starts_t) else 0.0, 0.0)
    apnea = t_end - last > APNEA_S
    high = np.zeros(n_win, dtype=bool)
    if len(table) >= 2:
        b_start, b_end = table["start"].to_numpy() / fs, table["end"].to_numpy() / fs
        rate = table["resp_rate_bpm"].to_numpy()
        lo_i = np.searchsorted(b_start, t_end - APNEA_S, side="left")
        hi_i = np.searchsorted(b_end, t_end, side="right")  # breaths sorted: ends increase with starts
        dur = b_end - b_start
        for j in np.flatnonzero(hi_i - lo_i >= 2):
            sl = slice(lo_i[j], hi_i[j])
            high[j] = _weighted_median(rate[sl], dur[sl]) > HIGH_RATE_BPM
    out = pd.DataFrame({"t_s": t_end - w / fs, "low_pressure": low, "apnea": apnea, "high_rate": high})
    out["alarm"] = out[list(ALARM_KINDS)].any(axis=1)
    return out


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Median of `values` weighted by `weights` (NaN values ignored; NaN when none is left)."""
    v, wt = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(v) & np.isfinite(wt) & (wt > 0)
    if not ok.any():
        return float("nan")
    order = np.argsort(v[ok])
    v, cw = v[ok][order], np.cumsum(wt[ok][order])
    return float(v[np.searchsorted(cw, 0.5 * cw[-1])])


def _pressure_summary(table: pd.DataFrame, fs: float) -> dict:
    """n_breaths and duration-weighted medians of resp_rate_bpm, ie_ratio, peep_cmh2o, pip_cmh2o
    over the breaths of :func:`pressure_breath_table` lasting ≤ APNEA_S (a longer one holds an
    apnea or a disconnection: its rate and end pressure are not the ventilator's settings)."""
    dur = (table["end"] - table["start"]).to_numpy() / fs
    ok = dur <= APNEA_S
    out: dict = {"n_breaths": int(ok.sum())}
    for col in ("resp_rate_bpm", "ie_ratio", "peep_cmh2o", "pip_cmh2o"):
        out[col] = _weighted_median(table[col].to_numpy()[ok], dur[ok])
    return out


def pressure_features(paw: np.ndarray, sampling_rate: float) -> dict:
    """Ventilation summary of a record with airway pressure (cmH2O) but no flow; same keys as
    :func:`ventilator_features` (VENTILATOR_FEATURE_KEYS).

    Breaths from :func:`pressure_breath_table`, those longer than 10 s (an apnea or a
    disconnection inside) left out; n_breaths counts the others; resp_rate_bpm, ie_ratio,
    pip_cmh2o, peep_cmh2o are their medians weighted by breath duration (the value the ventilator
    ran at for most of the time, so a burst of fast shallow breaths does not outvote the rest of
    the record); alarm_fraction = fraction of seconds with any :func:`pressure_alarms` alarm.
    Volumes, minute ventilation,
    compliance and resistance need flow: NaN, and quality_flag is "low_quality" with reason
    "pressure_only" (plus "few_breaths" < 3 breaths, "missing_samples" > 20 % NaN).
    "no_signal" (NaN features): no finite pressure ("no_pressure"), < 1 cmH2O range
    ("flat_pressure"), no complete breath ("no_breaths"), rate outside 4–70 /min
    ("implausible_rate"), PEEP outside −5–40 or PIP above 120 cmH2O ("implausible_pressure").
    """
    p = np.asarray(paw, dtype=np.float64)
    p = np.where(np.isfinite(p), p, np.nan)
    fs = float(sampling_rate)
    finite = np.isfinite(p)
    if len(p) == 0 or not finite.any():
        return _nan_features("no_pressure")
    if np.ptp(p[finite]) < 1.0:
        return _nan_features("flat_pressure")
    detected = _pressure_breaths(p, fs)
    table = _pressure_table(p, detected[0], _pressure_segments(p, *detected), fs)
    summary = _pressure_summary(table, fs)
    if summary["n_breaths"] == 0:
        return _nan_features("no_breaths")
    out = {k: float("nan") for k in VENTILATOR_FEATURE_KEYS}
    out.update(summary)
    if not (MIN_RATE_BPM <= out["resp_rate_bpm"] <= MAX_RATE_BPM):
        return _nan_features("implausible_rate")
    if not (MIN_PEEP_CMH2O <= out["peep_cmh2o"] <= MAX_PEEP_CMH2O and out["pip_cmh2o"] <= MAX_PIP_CMH2O):
        return _nan_features("implausible_pressure")
    alarms = _pressure_alarms(p, fs, detected[4], table)
    out["alarm_fraction"] = float(alarms["alarm"].mean()) if len(alarms) else float("nan")
    reasons = ["pressure_only"]
    if out["n_breaths"] < 3:
        reasons.append("few_breaths")
    if np.mean(~finite) > 0.2:
        reasons.append("missing_samples")
    out["quality_flag"], out["quality_reason"] = "low_quality", ";".join(reasons)
    return {k: out[k] for k in VENTILATOR_FEATURE_KEYS}


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
