"""ECG R-peaks, heart rate, HRV and signal quality, per record, in windows.

NeuroKit2 is the reference and the building block: peaks are
`nk.ecg_findpeaks(nk.ecg_clean(x, sampling_rate), sampling_rate, method)` (the kernel of
`nk.ecg_peaks` without its DataFrame; `ecg_process` is ~100× slower). Signal quality is a beat
template-correlation SQI (mean Pearson correlation of each beat with the window's median beat,
Orphanidou et al. 2015), computed with numpy instead of `nk.ecg_quality`, whose "averageQRS" score is
rescaled per record (the worst beat is always 0) and takes ~10× longer than cleaning + peaks.

Input ECG is in mV. Long records are processed in equal windows of at most `window_s` so memory
stays flat; a window with too many NaN samples, a flat line, a clipped (saturated / lead-off) trace,
an implausible beat count or a low SQI is excluded with a reason, and the second lead is tried.
A record without a usable window gives NaN features and `quality_flag="no_signal"`.
"""

from __future__ import annotations

import importlib
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np


@cache
def neurokit() -> ModuleType:
    """neurokit2, imported on first use: it pulls in scikit-learn and takes seconds to import, which
    every process that merely loads the pipeline's definitions would otherwise pay."""
    return importlib.import_module("neurokit2")


ECG_FEATURE_KEYS: tuple[str, ...] = (
    "n_beats",
    "hr_mean_bpm",
    "hrv_mean_nn_ms",
    "hrv_sdnn_ms",
    "hrv_rmssd_ms",
    "hrv_pnn50_pct",
    "irregular_rr_fraction",
    "ecg_quality",
    "usable_fraction",
    "quality_flag",
    "quality_reason",
)

# Thresholds (documented in ecg_features).
MIN_RUN_S = 4.0  # a finite stretch shorter than this is not analysed
MIN_FINITE_FRACTION = 0.5  # of a window's samples, in finite stretches ≥ MIN_RUN_S
FLAT_RANGE_MV = 0.05  # 1st–99th percentile range below this = flat line / lead off
FLAT_RUN_S = 1.0  # a stretch of identical samples at least this long is "stuck"
FLAT_RUN_FRACTION = 0.5  # this fraction of samples in stuck stretches = flat
SATURATION_FRACTION = 0.1  # this fraction of samples at the window's min or max = clipped
MIN_HR_BPM, MAX_HR_BPM = 20.0, 250.0  # plausible mean heart rate of a window
RR_MIN_S, RR_MAX_S = 60.0 / 250.0, 60.0 / 20.0  # RR intervals outside are not NN intervals
SQI_EXCLUDE = 0.5  # window SQI below this: excluded ("low_sqi")
SQI_OK = 0.66  # record mean SQI below this: quality_flag "low_quality" (Orphanidou 2015)
USABLE_OK = 0.5  # record usable fraction below this: quality_flag "low_quality"
IRREGULAR_DELTA = 0.2  # successive RR change > 20 % = irregular
MAX_SDNN_MS = 1000.0  # above: HRV features set NaN, quality "low_quality" ("implausible_hrv")
_PAD_S = 1.0  # context either side of a window for the filters and the detector


def ecg_peaks(ecg: np.ndarray, sampling_rate: float, method: str = "neurokit") -> np.ndarray:
    """R-peak sample indices of one ECG lead (mV) at `sampling_rate` Hz.

    Cleans with `nk.ecg_clean` (its "neurokit" cleaning, or the method's own cleaning when
    neurokit2 has one of that name) and detects with `nk.ecg_findpeaks(method=method)`.
    NaN samples are never passed to neurokit2: each finite stretch of at least 4 s is processed
    separately and its peaks are offset back; shorter stretches yield no peaks.
    """
    x = np.asarray(ecg, dtype=np.float64)
    fs = float(sampling_rate)
    out = []
    for start, stop in finite_runs(x, int(round(MIN_RUN_S * fs))):
        out.append(start + _peaks_finite(x[start:stop], fs, method))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


_CLEAN_METHODS = {"neurokit", "biosppy", "pantompkins1985", "hamilton2002", "elgendi2010", "engzeemod2012"}


def _peaks_finite(x: np.ndarray, fs: float, method: str) -> np.ndarray:
    """Peaks of an all-finite segment (indices into x)."""
    return _clean_and_peaks(x, fs, method)[1]


def _clean_and_peaks(x: np.ndarray, fs: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(cleaned signal, peak indices) of an all-finite segment."""
    if len(x) < int(fs) or np.ptp(x) == 0:
        return x - (x.mean() if len(x) else 0.0), np.zeros(0, dtype=np.int64)
    clean_method = method if method in _CLEAN_METHODS else "neurokit"
    nk = neurokit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleaned = np.asarray(nk.ecg_clean(x, sampling_rate=fs, method=clean_method), dtype=np.float64)
        try:
            found = nk.ecg_findpeaks(cleaned, sampling_rate=fs, method=method)["ECG_R_Peaks"]
        except (ValueError, IndexError):  # neurokit2 raises on degenerate input (e.g. no QRS at all)
            return cleaned, np.zeros(0, dtype=np.int64)
    found = np.asarray(found, dtype=np.float64)
    found = found[np.isfinite(found)].astype(np.int64)
    return cleaned, np.unique(found[(found >= 0) & (found < len(x))])


def finite_runs(x: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """[start, stop) of the stretches of finite samples at least `min_len` long."""
    finite = np.isfinite(x)
    if not finite.any():
        return []
    edges = np.diff(np.concatenate(([0], finite.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, stops) if b - a >= max(min_len, 1)]


def constant_run_fraction(x: np.ndarray, min_len: int) -> float:
    """Fraction of samples lying in runs of ≥ `min_len` identical consecutive values ("stuck" signal).

    Coarsely quantised or oversampled traces repeat values for a few samples; a disconnected lead
    or a stalled sensor repeats one value for seconds.
    """
    x = np.asarray(x)
    if len(x) == 0:
        return 0.0
    change = np.flatnonzero(np.diff(x) != 0) + 1
    bounds = np.concatenate(([0], change, [len(x)]))
    lengths = np.diff(bounds)
    return float(lengths[lengths >= max(min_len, 1)].sum() / len(x))


def signal_template_quality(
    signal: np.ndarray,
    peaks: np.ndarray,
    sampling_rate: float,
    *,
    before_s: float = 0.2,
    after_s: float = 0.4,
) -> float:
    """Template-correlation SQI in [0, 1] of a beat signal (ECG, PPG) around its `peaks`.

    Beats are the segments `[peak − before_s, peak + after_s)`; the template is their
    sample-wise median; the SQI is the mean Pearson correlation of each beat with the template,
    clipped at 0. NaN if fewer than 3 complete, finite beats.
    """
    x = np.asarray(signal, dtype=np.float64)
    fs = float(sampling_rate)
    b, a = int(round(before_s * fs)), int(round(after_s * fs))
    p = np.asarray(peaks, dtype=np.int64)
    p = p[(p - b >= 0) & (p + a <= len(x))]
    if len(p) < 3 or a + b < 3:
        return float("nan")
    beats = x[p[:, None] + np.arange(-b, a)[None, :]]
    beats = beats[np.isfinite(beats).all(axis=1)]
    if len(beats) < 3:
        return float("nan")
    template = np.median(beats, axis=0)
    bc = beats - beats.mean(axis=1, keepdims=True)
    tc = template - template.mean()
    denom = np.sqrt((bc**2).sum(axis=1) * (tc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (bc @ tc) / denom
    r = np.where(np.isfinite(r), r, 0.0)
    return float(np.clip(r, 0.0, 1.0).mean())


@dataclass
class _Window:
    start: int  # global sample index of the window's first sample
    stop: int
    usable: bool
    reason: str = ""
    peaks: np.ndarray | None = None  # global indices
    lead: int = 0  # which lead the window's peaks come from
    sqi: float = float("nan")
    usable_samples: int = 0


def _analyse_window(x: np.ndarray, core: slice, fs: float, method: str) -> _Window:
    """Check and detect one lead over `x[core]` (with context around it). Indices are local to x."""
    seg = x[core]
    n = len(seg)
    runs = finite_runs(x, int(round(MIN_RUN_S * fs)))
    # finite samples of the core that lie in analysable runs
    covered = sum(max(0, min(b, core.stop) - max(a, core.start)) for a, b in runs)
    w = _Window(core.start, core.stop, usable=False, usable_samples=covered)
    if covered < MIN_FINITE_FRACTION * n:
        w.reason = "missing_samples"
        return w
    finite = seg[np.isfinite(seg)]
    lo, hi = np.percentile(finite, [1, 99])
    if hi - lo < FLAT_RANGE_MV or constant_run_fraction(finite, int(round(FLAT_RUN_S * fs))) >= FLAT_RUN_FRACTION:
        w.reason = "flat_line"
        return w
    fmin, fmax = finite.min(), finite.max()
    if np.mean(finite == fmin) + np.mean(finite == fmax) >= SATURATION_FRACTION:
        w.reason = "saturated"
        return w
    # Detect on the lead as recorded; if that gives no plausible beats (e.g. a lead whose QRS points
    # down, which neurokit2's detector misses), try once more on the inverted lead.
    for polarity in (1.0, -1.0):
        peaks = []
        cleaned = np.full(len(x), np.nan)
        for a, b in runs:
            if b <= core.start or a >= core.stop:
                continue
            cleaned[a:b], p = _clean_and_peaks(polarity * x[a:b], fs, method)
            p = a + p
            peaks.append(p[(p >= core.start) & (p < core.stop)])
        peaks_arr = np.concatenate(peaks) if peaks else np.zeros(0, dtype=np.int64)
        rate = len(peaks_arr) / (covered / fs) * 60.0
        if len(peaks_arr) < 3 or not (MIN_HR_BPM <= rate <= MAX_HR_BPM):
            w.reason = "implausible_beats"
            continue
        w.sqi = signal_template_quality(cleaned, peaks_arr, fs)
        if not (w.sqi >= SQI_EXCLUDE):
            w.reason = "low_sqi"
            continue
        w.usable, w.peaks, w.reason = True, peaks_arr, ""
        break
    return w


def _as_leads(signals: dict[str, np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Leads in priority order: dict order (MLII first in the landing contract), or array columns."""
    if isinstance(signals, dict):
        leads = [np.asarray(v, dtype=np.float64) for v in signals.values()]
    else:
        arr = np.asarray(signals, dtype=np.float64)
        leads = [arr] if arr.ndim == 1 else [arr[:, i] for i in range(arr.shape[1])]
    if not leads:
        raise ValueError("ecg_features needs at least one lead")
    return leads


def _nan_features(reason: str, quality_flag: str = "no_signal", usable_fraction: float = 0.0) -> dict:
    out = {k: float("nan") for k in ECG_FEATURE_KEYS}
    out.update(n_beats=0, usable_fraction=usable_fraction, quality_flag=quality_flag, quality_reason=reason)
    return out


def _reason_text(reasons: list[str]) -> str:
    """'flat_line×2;missing_samples×1' style summary, most frequent first (deterministic)."""
    counts = Counter(reasons)
    return ";".join(f"{r}x{c}" for r, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def ecg_features(
    signals: dict[str, np.ndarray] | np.ndarray,
    sampling_rate: float,
    *,
    window_s: float = 300,
    method: str = "neurokit",
) -> dict:
    """Heart rate, HRV and quality of one ECG record (leads in mV at `sampling_rate` Hz).

    `signals`: {lead name: samples} (first lead = primary, e.g. MLII; second = fallback, e.g. V5),
    an (n, leads) array or a 1-D array. The record is split into equal windows of at most
    `window_s` s. Per window the primary lead is checked; if it is unusable the second lead is tried.
    A lead whose detection fails is retried inverted (downward QRS) before the fallback lead.
    A window is unusable ("missing_samples") when < 50 % of it is in finite stretches ≥ 4 s,
    ("flat_line") when its 1st–99th percentile range is < 0.05 mV or ≥ 50 % of its samples sit in
    runs of one repeated value lasting ≥ 1 s, ("saturated") when ≥ 10 % of samples sit at its min
    or max, ("implausible_beats") when < 3 beats or a mean rate outside 20–250 bpm, ("low_sqi")
    when its SQI < 0.5.

    Returns (units in the names): n_beats; hr_mean_bpm = 60000 / mean NN; hrv_mean_nn_ms,
    hrv_sdnn_ms (ddof=1), hrv_rmssd_ms, hrv_pnn50_pct over NN intervals = RR intervals of 0.24–3 s
    between successive peaks of one finite stretch (RR never spans a NaN gap or an excluded window);
    irregular_rr_fraction = share of successive NN pairs whose change exceeds 20 % of the earlier;
    ecg_quality = duration-weighted mean window SQI; usable_fraction = analysed samples (finite
    stretches ≥ 4 s inside usable windows) / record samples; quality_flag "ok" | "low_quality"
    (ecg_quality < 0.66 or usable_fraction < 0.5,
    or < 2 NN intervals, or SDNN > 1000 ms: then SDNN/RMSSD/pNN50 are NaN) | "no_signal" (no usable window; all other features NaN, n_beats 0);
    quality_reason "" when ok, else the codes above with counts, e.g. "flat_linex2".
    """
    leads = _as_leads(signals)
    fs = float(sampling_rate)
    n = len(leads[0])
    if any(len(lead) != n for lead in leads):
        raise ValueError("ecg_features: all leads must have the same length")
    if n == 0 or not fs > 0:
        return _nan_features("empty_record")
    if n < int(round(MIN_RUN_S * fs)):
        return _nan_features("too_short")

    n_windows = max(1, int(np.ceil(n / (window_s * fs))))
    bounds = np.linspace(0, n, n_windows + 1).round().astype(int)
    pad = int(round(_PAD_S * fs))
    windows: list[_Window] = []
    excluded: list[str] = []
    for k in range(n_windows):
        a, b = int(bounds[k]), int(bounds[k + 1])
        lo, hi = max(0, a - pad), min(n, b + pad)
        chosen, first_reason = None, ""
        for lead_no, lead in enumerate(leads[:2]):
            cand = _analyse_window(lead[lo:hi], slice(a - lo, b - lo), fs, method)
            if cand.usable:
                cand.peaks, cand.lead = cand.peaks + lo, lead_no
                chosen = cand
                break
            first_reason = first_reason or cand.reason
        if chosen is None:
            excluded.append(first_reason)
            windows.append(_Window(a, b, usable=False, reason=first_reason))
        else:
            chosen.start, chosen.stop = a, b
            windows.append(chosen)

    usable = [w for w in windows if w.usable]
    if not usable:
        return _nan_features(_reason_text(excluded))

    # Stretch id per peak: RR intervals are taken only between successive peaks of one stretch.
    # A stretch = consecutive usable windows on the same lead, within one finite run of that lead
    # (an excluded window, a lead switch or a NaN gap starts a new stretch).
    run_starts = [np.array([r[0] for r in finite_runs(lead, 1)] or [0]) for lead in leads[:2]]
    parts, keys, block, prev = [], [], 0, None
    for w in windows:
        if not w.usable:
            prev = None
            continue
        if prev != (w.lead, w.start):
            block += 1
        run_idx = np.searchsorted(run_starts[w.lead], w.peaks, side="right") - 1
        parts.append(w.peaks)
        keys.append(block * (n + 1) + run_idx)
        prev = (w.lead, w.stop)
    peaks = np.concatenate(parts)
    stretch = np.concatenate(keys)
    keep = np.concatenate(([True], np.diff(peaks) > 0))  # windows are disjoint; guard duplicates
    peaks, stretch = peaks[keep], stretch[keep]

    rr = np.diff(peaks) / fs
    same = stretch[1:] == stretch[:-1]
    nn_valid = same & (rr >= RR_MIN_S) & (rr <= RR_MAX_S)
    nn_ms = rr[nn_valid] * 1000.0
    # successive differences only between adjacent valid NN intervals
    pair = nn_valid[1:] & nn_valid[:-1]
    d_ms = (rr[1:] - rr[:-1])[pair] * 1000.0
    prev_ms = rr[:-1][pair] * 1000.0

    total_usable = sum(w.usable_samples for w in usable)
    sqi = float(np.average([w.sqi for w in usable], weights=[w.stop - w.start for w in usable]))
    usable_fraction = total_usable / n
    out = {
        "n_beats": int(len(peaks)),
        "hr_mean_bpm": float(60000.0 / nn_ms.mean()) if len(nn_ms) else float("nan"),
        "hrv_mean_nn_ms": float(nn_ms.mean()) if len(nn_ms) else float("nan"),
        "hrv_sdnn_ms": float(nn_ms.std(ddof=1)) if len(nn_ms) > 1 else float("nan"),
        "hrv_rmssd_ms": float(np.sqrt(np.mean(d_ms**2))) if len(d_ms) else float("nan"),
        "hrv_pnn50_pct": float(np.mean(np.abs(d_ms) > 50.0) * 100.0) if len(d_ms) else float("nan"),
        "irregular_rr_fraction": (
            float(np.mean(np.abs(d_ms) > IRREGULAR_DELTA * prev_ms)) if len(d_ms) else float("nan")
        ),
        "ecg_quality": sqi,
        "usable_fraction": float(usable_fraction),
    }
    reasons = []
    if out["hrv_sdnn_ms"] > MAX_SDNN_MS:  # RR series dominated by missed/extra beats, not variability
        reasons.append("implausible_hrv")
        out.update({k: float("nan") for k in ("hrv_sdnn_ms", "hrv_rmssd_ms", "hrv_pnn50_pct")})
    if sqi < SQI_OK:
        reasons.append("low_sqi_mean")
    if usable_fraction < USABLE_OK:
        reasons.append("low_usable_fraction")
    if len(nn_ms) < 2:
        reasons.append("too_few_nn")
    if reasons:
        out["quality_flag"] = "low_quality"
        out["quality_reason"] = ";".join(reasons + ([_reason_text(excluded)] if excluded else []))
    else:
        out["quality_flag"] = "ok"
        out["quality_reason"] = ""
    return {k: out[k] for k in ECG_FEATURE_KEYS}
