"""Mechanical-ventilator waveforms: breath segmentation and per-record ventilation features.

Conventions: flow in L/min (positive = inspiration, into the patient), airway pressure (Paw) in
cmH2O, volumes in mL. Breaths are segmented from flow alone (no ventilator markers needed), so the
same code serves WFDB ventilator records and Puritan Bennett 840 text exports; when the export has
the ventilator's own breath markers, :func:`breath_segments_from_markers` uses them instead. The
PB-840 reader lives in `twin_pipeline.sources.pb840` (re-exported here).
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
    "quality_flag",
    "quality_reason",
)


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


def breath_segments_from_markers(
    breath_start: np.ndarray, breath_end: np.ndarray, flow: np.ndarray, sampling_rate: float
) -> pd.DataFrame:
    """Breaths from the ventilator's own markers (PB-840 `BS`/`BE`, see :func:`read_pb840`).

    `breath_start` / `breath_end`: boolean per sample (first sample after BS, last sample before
    BE). A breath is [BS sample, BE sample] (`end` exclusive = BE sample + 1); inspiration ends at
    the first sample ≥ 0.1 s after the start whose flow is ≤ 0 (the flow zero crossing, ventMAP's
    x0), or at the breath end when flow never turns. Same columns as :func:`breath_segments`.
    A BS without a following BE (truncated export) is dropped.
    """
    x = np.asarray(flow, dtype=np.float64)
    fs = float(sampling_rate)
    bs = np.flatnonzero(np.asarray(breath_start, dtype=bool))
    be = np.flatnonzero(np.asarray(breath_end, dtype=bool))
    starts, insp, ends = [], [], []
    nonpos = np.flatnonzero(~(np.where(np.isfinite(x), x, 0.0) > 0))
    min_insp = max(1, int(round(MIN_INSP_S * fs)))
    for k, a in enumerate(bs):
        nxt = bs[k + 1] if k + 1 < len(bs) else len(x)
        j = np.searchsorted(be, a)
        if j >= len(be) or be[j] >= nxt:
            continue
        end = int(be[j]) + 1
        m = np.searchsorted(nonpos, a + min_insp)
        ie = int(nonpos[m]) if m < len(nonpos) and nonpos[m] < end else end
        starts.append(int(a))
        insp.append(ie)
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
    expiration (rectangle rule, flow L/min → mL); ie_ratio = insp_time / exp_time; pip_cmh2o = max
    Paw over the breath; peep_cmh2o = mean Paw over the last 0.1 s of expiration;
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
        out["compliance_lsf_ml_cmh2o"], out["resistance_lsf_cmh2o_l_s"] = _lsf_mechanics(p, x, s, i, peep, fs)
    else:
        out["pip_cmh2o"], out["peep_cmh2o"] = np.nan, np.nan
        out["compliance_lsf_ml_cmh2o"], out["resistance_lsf_cmh2o_l_s"] = np.nan, np.nan
    driving = out["pip_cmh2o"] - out["peep_cmh2o"]
    out["dynamic_compliance_ml_cmh2o"] = np.where(
        driving >= MIN_DRIVING_CMH2O, out["tidal_volume_insp_ml"] / driving, np.nan
    )
    return out


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
    minute_ventilation_l_min = Σ VT_exp / Σ breath
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
