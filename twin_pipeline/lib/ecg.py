"""ECG R-peaks, heart rate, HRV and signal quality, per record, in windows.

R-peaks (default method "twin"): this package's kernel, :func:`ecg_peaks_leads`, which fuses both
leads by per-10-s template quality (see the section comment at the end of this module). On the 18
MIT-BIH records it scores F1 0.992 against 0.982 for neurokit2 `ecg_peaks(ecg_clean(x))` at about
twice its speed (median of 3 repeats in one run; benchmarks/ecg_rpeaks.py, side by side).
Frequency-domain HRV (LF, HF, LF/HF): :func:`hrv_frequency`. NeuroKit2 stays available as the
reference (`method="neurokit"` or any `nk.ecg_findpeaks` method:
`nk.ecg_findpeaks(nk.ecg_clean(x, sampling_rate), sampling_rate, method)`). Signal quality is a
beat template-correlation SQI (mean Pearson correlation of each beat with the window's median
beat, Orphanidou et al. 2015), computed with numpy instead of `nk.ecg_quality`, whose "averageQRS"
score is rescaled per record (the worst beat is always 0) and takes ~10× longer than detection.

Input ECG is in mV. Long records are processed in equal windows of at most `window_s` so memory
stays flat (~4 MB from 30 min to 8 h, benchmarks/ecg_throughput.py); a window with too many NaN
samples, a flat line, a clipped (saturated / lead-off) trace, an implausible beat count or a low SQI
is excluded with a reason (with method "twin" a failing lead is left out of the fusion; with the
neurokit2 methods the second lead is tried). A record without a usable window gives NaN features
and `quality_flag="no_signal"`.
"""

from __future__ import annotations

import importlib
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np
from scipy import signal as _ss
from scipy.ndimage import maximum_filter1d, median_filter


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
    "hrv_lf_ms2",
    "hrv_hf_ms2",
    "hrv_lf_hf",
    "hrv_freq_reason",
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
HRV_LF_HZ = (0.04, 0.15)  # frequency-domain HRV bands (Task Force 1996; neurokit2 hrv_frequency)
HRV_HF_HZ = (0.15, 0.40)
HRV_RESAMPLE_HZ = 4.0  # NN series cubic-spline interpolated at this rate for the spectrum
HRV_FREQ_MIN_S = 120.0  # shortest uninterrupted NN run given a spectrum (~2 min for LF, Task Force)
HRV_FREQ_SEGMENT_S = 300.0  # longer runs are cut into ≈ 5-min segments whose band powers are averaged
_PAD_S = 1.0  # context either side of a window for the filters and the detector


def ecg_peaks(ecg: np.ndarray, sampling_rate: float, method: str = "neurokit") -> np.ndarray:
    """R-peak sample indices of one ECG lead (mV) at `sampling_rate` Hz.

    method="twin": this package's kernel (:func:`ecg_peaks_leads` on one lead). Otherwise cleans with `nk.ecg_clean` (its "neurokit" cleaning, or the method's own cleaning when
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
    if method == "twin":
        return ecg_clean_fast(x, fs), _fused_peaks([x], fs)
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
    change = np.flatnonzero(finite[1:] != finite[:-1]) + 1  # no full-length int copies (flat memory)
    bounds = np.concatenate(([0], change, [len(finite)]))
    first = 0 if finite[0] else 1
    starts, stops = bounds[first:-1:2], bounds[first + 1 :: 2]
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


def _true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) index arrays of the runs of True in a boolean array."""
    m = np.concatenate(([False], np.asarray(mask, dtype=bool), [False]))
    edges = np.flatnonzero(m[1:] != m[:-1])
    return edges[0::2], edges[1::2]


def hrv_frequency(peaks: np.ndarray, sampling_rate: float, *, valid: np.ndarray | None = None) -> dict:
    """Frequency-domain HRV of the NN intervals between successive `peaks` (sample indices at
    `sampling_rate` Hz): LF and HF power in ms² and their ratio.

    NN intervals: RR intervals of 0.24–3 s, or those where `valid` (bool per interval,
    len(peaks) − 1) is True; any other interval splits the series into runs, and no spectrum spans
    a split. Rule: a run spanning ≥ HRV_FREQ_MIN_S = 120 s of NN time (Task Force 1996: ~2 min are
    needed for the LF component, ~1 min for HF; one rule so LF, HF and LF/HF come from the same
    data) is cut into k = max(1, round(span / 300 s)) segments of equal span (≈ the standard 5-min
    short-term length; ≥ 225 s when k > 1). Per segment: the NN values (ms, at their closing beat's time) are
    cubic-spline interpolated at 4 Hz; Welch PSD (Hann window of half the segment, 50 % overlap,
    zero-padded to the segment length, mean removed per window; the window choice of neurokit2
    `hrv_frequency`) in ms²/Hz; band power = sum of the PSD over the bins in [lo, hi) × bin width.
    Bands LF 0.04–0.15 Hz, HF 0.15–0.4 Hz (Task Force 1996, neurokit2 defaults). Segment powers
    are averaged weighted by segment length; hrv_lf_hf = hrv_lf_ms2 / hrv_hf_ms2.

    Returns hrv_lf_ms2, hrv_hf_ms2, hrv_lf_hf and hrv_freq_reason: "" when computed, else
    "no_nn" (< 2 NN intervals) or "nn_too_short" (no run of ≥ 120 s), with the three values NaN;
    "zero_hf_power" when HF is 0 (hrv_lf_hf NaN).
    """
    from scipy.interpolate import CubicSpline  # imported here: only this function needs it

    fs = float(sampling_rate)
    p = np.asarray(peaks, dtype=np.int64)
    nan = float("nan")
    out = {"hrv_lf_ms2": nan, "hrv_hf_ms2": nan, "hrv_lf_hf": nan, "hrv_freq_reason": "no_nn"}
    if len(p) < 3:
        return out
    rr_s = np.diff(p) / fs
    ok = (rr_s >= RR_MIN_S) & (rr_s <= RR_MAX_S)
    if valid is not None:
        if len(valid) != len(rr_s):
            raise ValueError("hrv_frequency: `valid` needs one entry per interval (len(peaks) - 1)")
        ok &= np.asarray(valid, dtype=bool)
    if ok.sum() < 2:
        return out
    step = 1.0 / HRV_RESAMPLE_HZ
    lf_sum = hf_sum = weight = 0.0
    for a, b in zip(*_true_runs(ok)):
        t = p[a + 1 : b + 1] / fs  # closing beat of each NN interval, s
        if b - a < 4 or t[-1] - t[0] < HRV_FREQ_MIN_S:
            continue
        k = max(1, int(round((t[-1] - t[0]) / HRV_FREQ_SEGMENT_S)))
        edges = np.searchsorted(t, np.linspace(t[0], t[-1], k + 1)[1:-1])
        for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(t)]):  # one spline per segment: flat memory
            ts = t[lo:hi]
            grid = ts[0] + step * np.arange(int((ts[-1] - ts[0]) / step) + 1)
            seg = CubicSpline(ts, rr_s[a + lo : a + hi] * 1000.0)(grid)
            half = len(seg) // 2
            f, psd = _ss.welch(seg, fs=HRV_RESAMPLE_HZ, window="hann", nperseg=half, nfft=2 * half,
                               detrend="constant", scaling="density")
            df = f[1] - f[0]
            lf_sum += len(seg) * psd[(f >= HRV_LF_HZ[0]) & (f < HRV_LF_HZ[1])].sum() * df
            hf_sum += len(seg) * psd[(f >= HRV_HF_HZ[0]) & (f < HRV_HF_HZ[1])].sum() * df
            weight += len(seg)
    if weight == 0:
        out["hrv_freq_reason"] = "nn_too_short"
        return out
    lf, hf = lf_sum / weight, hf_sum / weight
    out.update(hrv_lf_ms2=float(lf), hrv_hf_ms2=float(hf), hrv_freq_reason="")
    if hf > 0:
        out["hrv_lf_hf"] = float(lf / hf)
    else:
        out["hrv_freq_reason"] = "zero_hf_power"
    return out


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


def _window_check(x: np.ndarray, core: slice, fs: float) -> tuple[str, int, list[tuple[int, int]]]:
    """(reason or "", covered samples, finite runs) of one lead over `x[core]` (x has context)."""
    seg = x[core]
    n = len(seg)
    runs = finite_runs(x, int(round(MIN_RUN_S * fs)))
    # finite samples of the core that lie in analysable runs
    covered = sum(max(0, min(b, core.stop) - max(a, core.start)) for a, b in runs)
    if covered < MIN_FINITE_FRACTION * n:
        return "missing_samples", covered, runs
    finite = seg[np.isfinite(seg)]
    lo, hi = np.percentile(finite, [1, 99])
    if hi - lo < FLAT_RANGE_MV or constant_run_fraction(finite, int(round(FLAT_RUN_S * fs))) >= FLAT_RUN_FRACTION:
        return "flat_line", covered, runs
    fmin, fmax = finite.min(), finite.max()
    if np.mean(finite == fmin) + np.mean(finite == fmax) >= SATURATION_FRACTION:
        return "saturated", covered, runs
    return "", covered, runs


def _analyse_window_fused(xs: list[np.ndarray], core: slice, fs: float) -> _Window:
    """Check every lead over `x[core]`; detect with :func:`ecg_peaks_leads` on the leads that pass.

    The window's SQI is the best template SQI among those leads (each cleaned by
    :func:`ecg_clean_fast` per finite stretch); its `lead` is that lead. Indices are local."""
    checks = [_window_check(x, core, fs) for x in xs]
    ok = [i for i, c in enumerate(checks) if not c[0]]
    w = _Window(core.start, core.stop, usable=False, usable_samples=max(c[1] for c in checks))
    if not ok:
        w.reason = checks[0][0]
        return w
    peaks = ecg_peaks_leads([xs[i] for i in ok], fs)
    peaks = peaks[(peaks >= core.start) & (peaks < core.stop)]
    covered = max(checks[i][1] for i in ok)
    w.usable_samples = covered
    rate = len(peaks) / (covered / fs) * 60.0
    if len(peaks) < 3 or not (MIN_HR_BPM <= rate <= MAX_HR_BPM):
        w.reason = "implausible_beats"
        return w
    best, best_sqi = ok[0], -1.0
    for i in ok:
        cleaned = np.full(len(xs[i]), np.nan)
        for a, b in checks[i][2]:
            cleaned[a:b] = ecg_clean_fast(xs[i][a:b], fs)
        q = signal_template_quality(cleaned, peaks, fs)
        if np.isfinite(q) and q > best_sqi:
            best, best_sqi = i, q
    w.sqi, w.lead = (best_sqi if best_sqi >= 0 else float("nan")), best
    if not (w.sqi >= SQI_EXCLUDE):
        w.reason = "low_sqi"
        return w
    w.usable, w.peaks, w.reason = True, peaks, ""
    return w


def _analyse_window(x: np.ndarray, core: slice, fs: float, method: str) -> _Window:
    """Check and detect one lead over `x[core]` (with context around it). Indices are local to x."""
    reason, covered, runs = _window_check(x, core, fs)
    w = _Window(core.start, core.stop, usable=False, usable_samples=covered)
    if reason:
        w.reason = reason
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


def _run_starts(leads: list[np.ndarray], bounds: np.ndarray) -> np.ndarray:
    """Start indices of the runs where at least one of `leads` is finite, computed window by window
    (memory stays flat)."""
    out = [np.zeros(1, dtype=np.int64)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        f = np.logical_or.reduce([np.isfinite(lead[a:b]) for lead in leads])
        before = any(bool(np.isfinite(lead[a - 1])) for lead in leads) if a > 0 else False
        prev = np.concatenate(([before], f[:-1]))
        out.append(np.flatnonzero(f & ~prev).astype(np.int64) + a)
    return np.unique(np.concatenate(out))


def _nan_features(reason: str, quality_flag: str = "no_signal", usable_fraction: float = 0.0) -> dict:
    out = {k: float("nan") for k in ECG_FEATURE_KEYS}
    out.update(n_beats=0, usable_fraction=usable_fraction, quality_flag=quality_flag, quality_reason=reason,
               hrv_freq_reason="no_nn")
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
    method: str = "twin",
) -> dict:
    """Heart rate, HRV and quality of one ECG record (leads in mV at `sampling_rate` Hz).

    `signals`: {lead name: samples} (first lead = primary, e.g. MLII; second = fallback, e.g. V5),
    an (n, leads) array or a 1-D array. The record is split into equal windows of at most
    `window_s` s. method="twin" (default): per window both leads are checked and the ones that pass
    are fused by :func:`ecg_peaks_leads`; the window's SQI and lead are those of its best lead.
    Other methods (neurokit2 detectors): the primary lead is checked; if it is unusable the second
    lead is tried; a lead whose detection fails is retried inverted (downward QRS) first.
    A window is unusable ("missing_samples") when < 50 % of it is in finite stretches ≥ 4 s,
    ("flat_line") when its 1st–99th percentile range is < 0.05 mV or ≥ 50 % of its samples sit in
    runs of one repeated value lasting ≥ 1 s, ("saturated") when ≥ 10 % of samples sit at its min
    or max, ("implausible_beats") when < 3 beats or a mean rate outside 20–250 bpm, ("low_sqi")
    when its SQI < 0.5.

    Returns (units in the names): n_beats; hr_mean_bpm = 60000 / mean NN; hrv_mean_nn_ms,
    hrv_sdnn_ms (ddof=1), hrv_rmssd_ms, hrv_pnn50_pct over NN intervals = RR intervals of 0.24–3 s
    between successive peaks of one finite stretch (RR never spans a NaN gap or an excluded window);
    hrv_lf_ms2, hrv_hf_ms2, hrv_lf_hf (LF 0.04–0.15 Hz, HF 0.15–0.4 Hz) from :func:`hrv_frequency`
    on those NN intervals: only runs of uninterrupted NN intervals spanning ≥ 120 s enter the
    spectrum (longer runs in ≈ 5-min segments, averaged); otherwise the three are NaN and
    hrv_freq_reason says why: "nn_too_short" | "no_nn" | "implausible_hrv" ("" when computed;
    "zero_hf_power": LF/HF NaN); a short spectrum alone does not change quality_flag;
    irregular_rr_fraction = share of successive NN pairs whose change exceeds 20 % of the earlier;
    ecg_quality = duration-weighted mean window SQI; usable_fraction = analysed samples (finite
    stretches ≥ 4 s inside usable windows) / record samples; quality_flag "ok" | "low_quality"
    (ecg_quality < 0.66 or usable_fraction < 0.5, or < 2 NN intervals, or SDNN > 1000 ms: then
    SDNN/RMSSD/pNN50/LF/HF are NaN) | "no_signal" (no usable window; all other features NaN,
    n_beats 0);
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
        if method == "twin":
            cand = _analyse_window_fused([lead[lo:hi] for lead in leads[:2]], slice(a - lo, b - lo), fs)
            if cand.usable:
                cand.peaks = cand.peaks + lo
                chosen = cand
            first_reason = cand.reason
        for lead_no, lead in enumerate(leads[:2] if method != "twin" else []):
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
    # (an excluded window, a lead switch or a NaN gap starts a new stretch). Method "twin" fuses
    # the leads in every window, so there a stretch is lead-agnostic: consecutive usable windows
    # within one run where at least one of the two leads is finite.
    fused = method == "twin"
    run_starts = [_run_starts(leads[:2] if fused else [lead], bounds) for lead in leads[: 1 if fused else 2]]
    parts, keys, block, prev = [], [], 0, None
    for w in windows:
        if not w.usable:
            prev = None
            continue
        lead = 0 if fused else w.lead
        if prev != (lead, w.start):
            block += 1
        run_idx = np.searchsorted(run_starts[lead], w.peaks, side="right") - 1
        parts.append(w.peaks)
        keys.append(block * (n + 1) + run_idx)
        prev = (lead, w.stop)
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
        **hrv_frequency(peaks, fs, valid=nn_valid),
        "irregular_rr_fraction": (
            float(np.mean(np.abs(d_ms) > IRREGULAR_DELTA * prev_ms)) if len(d_ms) else float("nan")
        ),
        "ecg_quality": sqi,
        "usable_fraction": float(usable_fraction),
    }
    reasons = []
    if out["hrv_sdnn_ms"] > MAX_SDNN_MS:  # RR series dominated by missed/extra beats, not variability
        reasons.append("implausible_hrv")
        out.update({k: float("nan") for k in ("hrv_sdnn_ms", "hrv_rmssd_ms", "hrv_pnn50_pct", "hrv_lf_ms2",
                                              "hrv_hf_ms2", "hrv_lf_hf")})
        out["hrv_freq_reason"] = "implausible_hrv"
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


# --------------------------------------------------------------------------------------------------
# Own R-peak kernel ("twin"): both leads fused by per-window template quality.
#
# Per lead: means of q0 = floor(fs / 150) consecutive samples (360 Hz → 180 Hz; the QRS band is
# < 25 Hz), zero-phase 5–22 Hz band-pass (float32), central difference, 100 ms moving RMS ("QRS
# energy") at ≈ 90 Hz (block means again: the envelope is ~10 Hz wide, so the beat logic loses
# nothing and runs on 4× fewer samples), divided by a local scale (running median over 9 s of the
# 2-s maxima) so every lead's beats sit near 1 whatever the gain. Each lead's energy peaks give the
# template-correlation SQI of its beats in each 10-s block, which weights its energy (SQI⁴) in a
# fused envelope; that is detected once (adaptive threshold, T-wave rejection, search-back). Peaks
# are refined to the largest |band-passed| sample within ±50 ms on the block's best lead, then to the
# full rate by a parabola through it and its neighbours. Benchmarked against neurokit2 and xqrs in
# benchmarks/ecg_rpeaks.py (F1, timing error, speed in the same run).
# --------------------------------------------------------------------------------------------------
TWIN_BAND_HZ = (5.0, 22.0)
TWIN_INTEGRATION_S = 0.10
TWIN_THRESHOLD = 0.5  # of the running beat level, on the normalised energy
TWIN_T_WAVE_RATIO = 0.7  # a peak < 360 ms after a beat and below 0.7× its energy is a T wave
TWIN_BLOCK_S = 10.0  # lead-weighting block
TWIN_SEARCHBACK_RR = 1.66  # gap > 1.66 × median RR → search back at half threshold
TWIN_REFRACTORY_S = 0.2
TWIN_BANDPASS_RATE_HZ = 150.0  # band-pass at fb = fs / floor(fs / 150) Hz (block means of the raw leads)
TWIN_ENVELOPE_HZ = 90.0  # the energy envelope and the beat logic run at fb / floor(fb / 90) Hz


def ecg_clean_fast(ecg: np.ndarray, sampling_rate: float) -> np.ndarray:
    """ECG with baseline wander removed: zero-phase 5th-order Butterworth high-pass at 0.5 Hz
    (neurokit2's "neurokit" cleaning without its powerline smoothing), in the input's units."""
    return _ss.sosfiltfilt(_highpass_sos(float(sampling_rate)), np.asarray(ecg, dtype=np.float64))


@cache
def _highpass_sos(fs: float) -> np.ndarray:
    """Second-order sections of the 0.5 Hz order-5 Butterworth high-pass (designed once per rate)."""
    return _ss.butter(5, 0.5, btype="highpass", fs=fs, output="sos")


def _moving_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Centred moving mean over k samples, edges padded with the end values (cumulative-sum form;
    equals scipy.ndimage.uniform_filter1d(mode="nearest") to rounding, ~2× faster)."""
    h = k // 2
    c = np.cumsum(np.concatenate((np.full(h + 1, x[0]), x, np.full(k - h - 1, x[-1]))))
    return (c[k:] - c[:-k]) / k


@cache
def _bandpass(fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(b, a, zi) in float32 of the order-4 Butterworth QRS band-pass (TWIN_BAND_HZ) at `fs` Hz
    (stable in (b, a) form); zi = steady-state initial conditions for a unit step."""
    hi = min(TWIN_BAND_HZ[1], 0.45 * fs)
    b, a = _ss.butter(2, [TWIN_BAND_HZ[0], hi], btype="bandpass", fs=fs)
    return b.astype(np.float32), a.astype(np.float32), _ss.lfilter_zi(b, a).astype(np.float32)


def _bandpass_zero_phase(x: np.ndarray, fs: float) -> np.ndarray:
    """QRS band-pass of one lead, zero phase, float32: what scipy.signal.filtfilt(b, a, x) computes
    (odd extension by 3·max(len(a), len(b)) samples, steady-state initial conditions, forward then
    backward pass) in float32: ~30 % faster; differs by < 1e-3 of the signal's peak amplitude."""
    b, a, zi = _bandpass(fs)
    p = min(3 * max(len(a), len(b)), len(x) - 1)
    ext = np.concatenate((2 * x[0] - x[p:0:-1], x, 2 * x[-1] - x[-2 : -p - 2 : -1]), dtype=np.float32)
    y, _ = _ss.lfilter(b, a, ext, zi=zi * ext[0])
    y, _ = _ss.lfilter(b, a, y[::-1], zi=zi * y[-1])
    return y[::-1][p : len(y) - p]  # a reversed view: no copy


def _upsample_linear(values: np.ndarray, block: float, n: int) -> np.ndarray:
    """Block values (block i centred at (i + 0.5)·block samples) linearly interpolated at samples
    0 … n−1, constant beyond the first and last centre (= np.interp on a regular grid)."""
    if len(values) == 1:
        return np.full(n, float(values[0]))
    return np.interp(np.arange(n, dtype=np.float64), (np.arange(len(values)) + 0.5) * block, values)


def _qrs_energy(bp: np.ndarray, fs: float, q: int) -> np.ndarray:
    """QRS energy of a band-passed lead at fs / q Hz, normalised to the local beat level ≈ 1.

    Energy = 100 ms moving RMS of the derivative; sample i is the mean over the band-passed
    samples [i·q, (i + 1)·q) (shifted by one: central difference). Local level = running median
    over 9 s of the 2-s maxima."""
    d = bp[2:] - bp[:-2]  # central difference (÷ 2 dropped: the energy is normalised below)
    d *= d
    e = _block_mean(d, q)
    fe = fs / q
    env = _moving_mean(e, max(1, int(round(TWIN_INTEGRATION_S * fe))))
    np.sqrt(np.maximum(env, 0.0, out=env), out=env)
    n, b = len(env), max(1, int(round(fe)))
    nb = int(np.ceil(n / b))
    blocks = np.pad(env, (0, nb * b - n), mode="edge").reshape(nb, b).max(axis=1)
    level = median_filter(maximum_filter1d(blocks, 2, mode="nearest"), size=9, mode="nearest")
    env /= np.maximum(_upsample_linear(level, b, n), 1e-12)
    return env


def _adaptive_beats(cand: np.ndarray, height: np.ndarray, fs: float) -> np.ndarray:
    """Accept candidate energy peaks (indices at `fs` Hz): adaptive threshold, T-wave rejection,
    search-back."""
    beats: list[int] = []
    rr: list[int] = []
    level, last, last_h = 1.0, -(10**12), 1.0
    refr = int(0.36 * fs)
    for p, h in zip(cand.tolist(), height.tolist()):
        thr = TWIN_THRESHOLD * level
        if h < thr or (beats and p - last < refr and h < TWIN_T_WAVE_RATIO * last_h):
            continue
        gap, recent = p - last, rr[-8:]
        # search back when the gap exceeds 1.66 × the recent median RR (min() first: a cheap bound)
        if (len(rr) >= 4 and gap > TWIN_SEARCHBACK_RR * min(recent)
                and gap > TWIN_SEARCHBACK_RR * statistics.median(recent)):
            lo = np.searchsorted(cand, last + refr)
            hi = np.searchsorted(cand, p - refr)
            if hi > lo:
                j = lo + int(np.argmax(height[lo:hi]))
                if height[j] >= 0.5 * thr:
                    rr.append(int(cand[j]) - last)
                    beats.append(int(cand[j]))
                    last, last_h = int(cand[j]), float(height[j])
        if beats:
            rr.append(p - last)
        beats.append(p)
        level = 0.875 * level + 0.125 * (h if h < 2.0 else 2.0)
        last, last_h = p, h
    return np.asarray(beats, dtype=np.int64)


def _block_sqi(bp: np.ndarray, peaks: np.ndarray, fs: float, n_blocks: int, block: int) -> np.ndarray:
    """Template-correlation SQI per block of a lead's beats (QRS −80/+120 ms of the band-passed lead):
    mean correlation of each beat with its block's mean beat, clipped at 0; 0 with < 3 beats."""
    b, a = int(round(0.08 * fs)), int(round(0.12 * fs))
    p = peaks[(peaks - b >= 0) & (peaks + a <= len(bp))]
    out = np.zeros(n_blocks)
    if len(p) < 3:
        return out
    beats = bp[p[:, None] + np.arange(-b, a)[None, :]]
    beats = beats - beats.mean(axis=1, keepdims=True)
    norm = np.sqrt((beats**2).sum(axis=1, keepdims=True))
    beats = beats / np.where(norm > 0, norm, 1.0)
    blk = np.minimum(p // block, n_blocks - 1)
    starts = np.flatnonzero(np.r_[True, blk[1:] != blk[:-1]])
    counts = np.diff(np.r_[starts, len(p)])
    tpl = np.add.reduceat(beats, starts, axis=0) / counts[:, None]
    tpl /= np.maximum(np.sqrt((tpl**2).sum(axis=1, keepdims=True)), 1e-12)
    r = np.clip((beats * np.repeat(tpl, counts, axis=0)).sum(axis=1), 0.0, 1.0)
    mean_r = np.add.reduceat(r, starts) / counts
    out[blk[starts]] = np.where(counts >= 3, mean_r, 0.0)
    return out


def _block_mean(x: np.ndarray, q: int) -> np.ndarray:
    """Means of q consecutive samples (the last block may be shorter), as a sum of q strided views
    (no reshape copy, no BLAS call: BLAS threads spin on a busy machine)."""
    if q == 1:
        return np.asarray(x, dtype=np.float64)
    m = len(x) // q
    y = x[0 : m * q : q].astype(np.float64)  # float64: the moving mean over it is a cumulative sum
    for j in range(1, q):
        y += x[j : m * q : q]
    y /= q
    return np.append(y, x[m * q :].mean()) if len(x) > m * q else y


def _fused_peaks(leads: list[np.ndarray], fs: float) -> np.ndarray:
    """R-peaks of all-finite, equal-length leads (indices into them)."""
    n = len(leads[0])
    q0 = max(1, int(fs // TWIN_BANDPASS_RATE_HZ))  # band-pass rate fb = fs / q0 (block means first)
    fb = fs / q0
    q = max(1, int(fb // TWIN_ENVELOPE_HZ))  # envelope rate fe = fb / q
    fe = fb / q
    bps = [_bandpass_zero_phase(_block_mean(x, q0), fb) for x in leads]
    envs = [_qrs_energy(bp, fb, q) for bp in bps]
    nbp, ne = len(bps[0]), len(envs[0])
    centre = q // 2  # band-pass-rate offset of an envelope sample's block
    block = max(1, int(TWIN_BLOCK_S * fb))
    nb = int(np.ceil(nbp / block))
    weights = None
    if len(envs) == 1:
        fused = envs[0]
    else:
        sqi = []
        for bp, env in zip(bps, envs):
            cand, _ = _ss.find_peaks(env, distance=max(1, int(0.3 * fe)), height=TWIN_THRESHOLD)
            sqi.append(_block_sqi(bp, cand * q + centre, fb, nb, block))
        w = np.stack([np.maximum(s, 0.01) ** 4 for s in sqi])
        # fused = Σ wᵢ·envᵢ / Σ wᵢ with block weights interpolated linearly between block centres
        # (two leads: one interpolated share instead of two weight arrays)
        if len(envs) == 2:
            share = _upsample_linear(w[0] / (w[0] + w[1]), block / q, ne)
            fused = envs[0] - envs[1]
            fused *= share
            fused += envs[1]
        else:
            full = np.stack([_upsample_linear(wi, block / q, ne) for wi in w])
            fused = (full * np.stack(envs)).sum(axis=0) / full.sum(axis=0)
        weights = w  # block-level, for the refinement below
    cand, props = _ss.find_peaks(fused, distance=max(1, int(TWIN_REFRACTORY_S * fe)), height=0.4 * TWIN_THRESHOLD)
    beats = _adaptive_beats(cand, props["peak_heights"], fe) * q + centre
    if len(beats) == 0:
        return beats
    # refine to the largest |band-passed| sample within ±50 ms on the beat block's best lead, then
    # to the full rate by a parabola through that sample and its neighbours
    r = int(round(0.05 * fb)) + centre
    offsets = np.arange(-r, r + 1)
    idx = np.clip(beats[:, None] + offsets[None, :], 1, nbp - 2)
    best = (np.zeros(len(beats), dtype=np.int64) if weights is None
            else np.argmax(weights[:, np.minimum(beats // block, nb - 1)], axis=0))
    mag = np.empty(idx.shape, dtype=np.float32)
    for i, bp in enumerate(bps):
        rows = best == i
        mag[rows] = np.abs(bp[idx[rows]])
    top = idx[np.arange(len(beats)), np.argmax(mag, axis=1)]
    if q0 == 1:
        return np.unique(top)
    y = np.empty((3, len(top)))  # |band-passed| at top − 1, top, top + 1
    for i, bp in enumerate(bps):
        rows = best == i
        y[:, rows] = np.abs(bp[top[rows][None, :] + np.arange(-1, 2)[:, None]])
    curv = y[0] - 2.0 * y[1] + y[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.where(curv < 0, 0.5 * (y[0] - y[2]) / curv, 0.0)
    full = np.rint((top + np.clip(delta, -0.5, 0.5)) * q0 + (q0 - 1) / 2).astype(np.int64)
    return np.unique(np.clip(full, 0, n - 1))


def ecg_peaks_leads(leads: list[np.ndarray] | np.ndarray, sampling_rate: float) -> np.ndarray:
    """R-peak sample indices from one or more simultaneous ECG leads (any units) at `sampling_rate` Hz.

    This package's kernel (method "twin"), see the section comment above. NaN handling: the record
    is split into stretches (≥ 4 s) where at least one lead is finite; a stretch uses the leads finite
    throughout it, or, when none is, the lead with most finite samples, stretch by stretch.
    """
    if isinstance(leads, np.ndarray):
        m = np.asarray(leads, dtype=np.float64)
        arr = [m] if m.ndim == 1 else [m[:, i] for i in range(m.shape[1])]
    else:
        arr = [np.asarray(x, dtype=np.float64) for x in leads]
    if not arr or any(len(x) != len(arr[0]) for x in arr):
        raise ValueError("ecg_peaks_leads needs one or more leads of equal length")
    fs = float(sampling_rate)
    min_len = int(round(MIN_RUN_S * fs))
    n = len(arr[0])
    if n >= max(min_len, 1) and all(np.isfinite(x).all() for x in arr):  # common case: one stretch
        use = [x for x in arr if np.ptp(x) > 0]
        return _fused_peaks(use, fs).astype(np.int64) if use else np.zeros(0, dtype=np.int64)
    finite = np.stack([np.isfinite(x) for x in arr])
    out = []
    for a, b in finite_runs(np.where(finite.any(axis=0), 0.0, np.nan), min_len):
        use = [x[a:b] for i, x in enumerate(arr) if finite[i, a:b].all() and np.ptp(x[a:b]) > 0]
        if use:
            out.append(a + _fused_peaks(use, fs))
            continue
        best = int(np.argmax(finite[:, a:b].sum(axis=1)))
        for a2, b2 in finite_runs(arr[best][a:b], min_len):
            seg = arr[best][a + a2 : a + b2]
            if np.ptp(seg) > 0:
                out.append(a + a2 + _fused_peaks([seg], fs))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)
