"""Wearable waveforms: PPG pulse rate / variability / quality, accelerometer activity, resting HR.

Both signals are processed per minute (60 s bins from the record start), so memory stays flat and
the two streams line up minute by minute. PPG peaks come from neurokit2
(`nk.ppg_findpeaks(nk.ppg_clean(x, sampling_rate), sampling_rate)`, Elgendi 2013); the quality index
is the beat template correlation shared with the ECG code. Activity uses ENMO
(Euclidean norm minus one g, van Hees et al. 2013) with wrist cut-points close to Hildebrand et al.
2014 (sedentary < 45 mg, moderate-to-vigorous ≥ 100 mg). The same PPG code gives a bedside monitor's
PLETH features (:func:`pleth_features`), and raw triaxial accelerometer recordings (.cwa/.bin, with
the Matrix's heart-rate channel) go through :func:`raw_accelerometer_features`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from twin_pipeline.lib.ecg import finite_runs, constant_run_fraction, neurokit, signal_template_quality

PPG_FEATURE_KEYS: tuple[str, ...] = ("pulse_rate_bpm", "prv_sdnn_ms", "ppg_quality", "quality_flag", "quality_reason")
ACTIVITY_FEATURE_KEYS: tuple[str, ...] = (
    "activity_counts_per_min",
    "sedentary_fraction",
    "active_minutes",
    "quality_flag",
    "quality_reason",
)
# PPG features of a bedside monitor's PLETH channel, added to the ECG monitor's feature row.
PLETH_FEATURE_KEYS: tuple[str, ...] = (
    "pleth_pulse_rate_bpm",
    "pleth_prv_sdnn_ms",
    "pleth_quality",
    "pleth_quality_flag",
    "pleth_quality_reason",
)
WEARABLE_FEATURE_KEYS: tuple[str, ...] = (
    "pulse_rate_bpm",
    "prv_sdnn_ms",
    "ppg_quality",
    "ppg_quality_flag",
    "ppg_quality_reason",
    "activity_counts_per_min",
    "sedentary_fraction",
    "active_minutes",
    "activity_quality_flag",
    "activity_quality_reason",
    "resting_hr_bpm",
    "quality_flag",
    "quality_reason",
)

MINUTE_S = 60.0
MIN_MINUTE_S = 20.0  # a minute bin (e.g. the trailing one) with fewer finite seconds is not evaluated
PPG_MIN_RUN_S = 8.0  # PPG finite stretches shorter than this are not analysed
PPG_PAD_S = 2.0  # context either side of a minute for the filters
IBI_MIN_S, IBI_MAX_S = 60.0 / 200.0, 60.0 / 30.0
IBI_LOCAL_TOLERANCE = 0.3  # IBIs further than 30 % from the minute's median IBI are artefacts
MIN_IBIS_PER_MINUTE = 5
MIN_BEAT_COVERAGE = 0.5  # accepted IBIs must span ≥ half of a minute's analysed seconds
PPG_SQI_EXCLUDE = 0.5  # minute SQI below this: excluded ("low_sqi")
PPG_SQI_OK = 0.86  # record mean SQI below this → low_quality (Orphanidou et al. 2015, PPG)
USABLE_OK = 0.5
SEDENTARY_MG = 45.0
ACTIVE_MG = 100.0
RESTING_HR_PERCENTILE = 10.0


def _minute_bounds(n: int, fs: float) -> list[tuple[int, int]]:
    """[start, stop) sample bounds of consecutive 60 s bins from sample 0.

    A trailing partial bin shorter than 20 s is dropped (unless it is the only bin), so a
    2-minute record plus a few samples has two minutes, not three.
    """
    step = int(round(MINUTE_S * fs))
    if step <= 0 or n <= 0:
        return []
    bounds = [(a, min(a + step, n)) for a in range(0, n, step)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_MINUTE_S * fs:
        bounds.pop()
    return bounds


def ppg_minutes(ppg: np.ndarray, sampling_rate: float) -> pd.DataFrame:
    """Per-minute PPG analysis: one row per 60 s bin from the record start.

    Columns: minute (0-based), usable (bool), reason ("" when usable, else too_short (a record
    shorter than 20 s) | missing_samples | flat_line | implausible_beats | low_beat_coverage |
    low_sqi), n_ibi, pulse_rate_bpm (60 / median IBI of the minute),
    sqi (template correlation), ibi_ms (array of the minute's accepted IBIs, in ms), n_samples,
    n_analysed (samples in finite stretches ≥ 8 s).
    An IBI is accepted when both peaks lie in one finite stretch ≥ 8 s, it is 0.3–2 s long and
    within 30 % of the minute's median IBI. A minute is usable with ≥ 20 s of such stretches,
    a non-flat trace (< 50 % of samples in ≥ 1 s runs of one value), ≥ 5 accepted IBIs that together
    span ≥ 50 % of the minute's analysed seconds (else "low_beat_coverage": on noisy ring PPG the
    minutes below it carried half-rate or artefact rates) and SQI ≥ 0.5.
    """
    x = np.asarray(ppg, dtype=np.float64)
    fs = float(sampling_rate)
    pad = int(round(PPG_PAD_S * fs))
    nk = neurokit()
    rows = []
    for m, (a, b) in enumerate(_minute_bounds(len(x), fs)):
        lo, hi = max(0, a - pad), min(len(x), b + pad)
        seg = x[lo:hi]
        runs = finite_runs(seg, int(round(PPG_MIN_RUN_S * fs)))
        covered = sum(max(0, min(r1, b - lo) - max(r0, a - lo)) for r0, r1 in runs)
        row = {"minute": m, "usable": False, "reason": "", "n_ibi": 0, "pulse_rate_bpm": np.nan, "sqi": np.nan,
               "ibi_ms": np.zeros(0), "n_samples": b - a, "n_analysed": covered}
        core = x[a:b]
        finite = core[np.isfinite(core)]
        if b - a < MIN_MINUTE_S * fs:  # the only bin of a record shorter than 20 s
            row["reason"] = "too_short"
        elif covered < MIN_MINUTE_S * fs:
            row["reason"] = "missing_samples"
        elif np.ptp(finite) == 0 or constant_run_fraction(finite, int(round(1.0 * fs))) >= 0.5:
            row["reason"] = "flat_line"
        else:
            peaks_all, ibis = [], []
            cleaned_all = np.full(len(seg), np.nan)
            for r0, r1 in runs:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cleaned = nk.ppg_clean(seg[r0:r1], sampling_rate=fs)
                    try:
                        peaks = np.asarray(nk.ppg_findpeaks(cleaned, sampling_rate=fs)["PPG_Peaks"], dtype=np.int64)
                    except (ValueError, IndexError):
                        peaks = np.zeros(0, dtype=np.int64)
                cleaned_all[r0:r1] = cleaned
                peaks = peaks + r0
                in_core = (peaks >= a - lo) & (peaks < b - lo)
                ibi = np.diff(peaks) / fs
                ibi = ibi[in_core[1:]]  # the IBI ending at a peak inside the minute
                peaks_all.append(peaks[in_core])
                ibis.append(ibi)
            peaks_arr = np.concatenate(peaks_all) if peaks_all else np.zeros(0, dtype=np.int64)
            ibi = np.concatenate(ibis) if ibis else np.zeros(0)
            ibi = ibi[(ibi >= IBI_MIN_S) & (ibi <= IBI_MAX_S)]
            if len(ibi):
                med = np.median(ibi)
                ibi = ibi[np.abs(ibi - med) <= IBI_LOCAL_TOLERANCE * med]
            if len(ibi) < MIN_IBIS_PER_MINUTE:
                row["reason"] = "implausible_beats"
            elif ibi.sum() < MIN_BEAT_COVERAGE * covered / fs:
                row["reason"] = "low_beat_coverage"  # most beats missed or rejected: rate unreliable
            else:
                sqi = signal_template_quality(cleaned_all, peaks_arr, fs, before_s=0.3, after_s=0.5)
                row.update(n_ibi=int(len(ibi)), pulse_rate_bpm=float(60.0 / np.median(ibi)), sqi=sqi,
                           ibi_ms=ibi * 1000.0)
                if not (sqi >= PPG_SQI_EXCLUDE):
                    row["reason"] = "low_sqi"
                else:
                    row["usable"] = True
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=["minute", "usable", "reason", "n_ibi", "pulse_rate_bpm", "sqi", "ibi_ms", "n_samples", "n_analysed"],
    )


def _reason_counts(reasons) -> str:
    counts = pd.Series(list(reasons)).value_counts()
    return ";".join(f"{r}x{c}" for r, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _ppg_from_minutes(minutes: pd.DataFrame) -> dict:
    usable = minutes[minutes["usable"]]
    if usable.empty:
        reason = _reason_counts(minutes["reason"]) if len(minutes) else "too_short"
        return {"pulse_rate_bpm": np.nan, "prv_sdnn_ms": np.nan, "ppg_quality": np.nan,
                "quality_flag": "no_signal", "quality_reason": reason}
    ibi = np.concatenate(usable["ibi_ms"].to_list())
    sqi = float(np.average(usable["sqi"], weights=usable["n_ibi"]))
    out = {
        "pulse_rate_bpm": float(60000.0 / ibi.mean()),
        "prv_sdnn_ms": float(ibi.std(ddof=1)) if len(ibi) > 1 else np.nan,
        "ppg_quality": sqi,
    }
    reasons = []
    if sqi < PPG_SQI_OK:
        reasons.append("low_sqi_mean")
    if usable["n_analysed"].sum() / minutes["n_samples"].sum() < USABLE_OK:
        reasons.append("low_usable_fraction")
    out["quality_flag"] = "low_quality" if reasons else "ok"
    out["quality_reason"] = ";".join(reasons)
    return out


def ppg_features(ppg: np.ndarray, sampling_rate: float) -> dict:
    """Pulse rate, pulse-rate variability and quality of a PPG record (any amplitude unit).

    pulse_rate_bpm = 60000 / mean accepted IBI (ms) over usable minutes (see :func:`ppg_minutes`);
    prv_sdnn_ms = SD (ddof=1) of those IBIs; ppg_quality = mean minute SQI weighted by IBI count;
    quality_flag "no_signal" (no usable minute, NaN features; reason = minute reasons with counts),
    "low_quality" (ppg_quality < 0.86 or < 50 % of the samples analysed in usable minutes) or "ok"
    (reason "").
    """
    return _ppg_from_minutes(ppg_minutes(ppg, sampling_rate))


def pleth_features(pleth: np.ndarray | None, sampling_rate: float) -> dict:
    """PPG features (PLETH_FEATURE_KEYS) of a bedside monitor's plethysmogram (any amplitude unit).

    :func:`ppg_features` (per-minute windows) with its keys prefixed "pleth_": pleth_pulse_rate_bpm
    = 60000 / mean accepted inter-beat interval (ms) of the usable minutes, pleth_prv_sdnn_ms = their
    SD (pulse-rate variability, ms), pleth_quality = mean minute SQI (0–1), pleth_quality_flag
    ok | low_quality | no_signal, pleth_quality_reason ("" when ok; minute reasons with counts,
    e.g. "flat_linex5"). `pleth` None (the record has no PLETH/PPG channel): NaN features,
    flag "no_signal", reason "no_pleth_channel".
    """
    if pleth is None:
        return {"pleth_pulse_rate_bpm": np.nan, "pleth_prv_sdnn_ms": np.nan, "pleth_quality": np.nan,
                "pleth_quality_flag": "no_signal", "pleth_quality_reason": "no_pleth_channel"}
    f = ppg_features(pleth, sampling_rate)
    return {"pleth_pulse_rate_bpm": f["pulse_rate_bpm"], "pleth_prv_sdnn_ms": f["prv_sdnn_ms"],
            "pleth_quality": f["ppg_quality"], "pleth_quality_flag": f["quality_flag"],
            "pleth_quality_reason": f["quality_reason"]}


def pleth_ecg_minutes(pleth: np.ndarray, ecg_leads: dict[str, np.ndarray], sampling_rate: float) -> pd.DataFrame:
    """Minute-by-minute agreement of a monitor's PLETH pulse rate with its ECG heart rate.

    One row per 60 s bin (as :func:`ppg_minutes`): minute, pleth_bpm (60000 / mean accepted IBI of
    the minute), pleth_usable, ecg_bpm (`ecg_features` run on the minute alone, leads in mV),
    ecg_ok (that minute's ECG quality_flag == "ok"), both_good, abs_diff_bpm (NaN unless both_good).
    """
    from twin_pipeline.lib.ecg import ecg_features

    fs = float(sampling_rate)
    minutes = ppg_minutes(pleth, fs)
    bounds = _minute_bounds(len(pleth), fs)
    rows = []
    for m, (a, b) in zip(minutes.itertuples(index=False), bounds):
        ecg = ecg_features({k: v[a:b] for k, v in ecg_leads.items()}, fs)
        pleth_bpm = float(60000.0 / np.mean(m.ibi_ms)) if len(m.ibi_ms) else np.nan
        good = bool(m.usable) and ecg["quality_flag"] == "ok"
        rows.append({"minute": m.minute, "pleth_bpm": pleth_bpm, "pleth_usable": bool(m.usable),
                     "ecg_bpm": ecg["hr_mean_bpm"], "ecg_ok": ecg["quality_flag"] == "ok", "both_good": good,
                     "abs_diff_bpm": abs(pleth_bpm - ecg["hr_mean_bpm"]) if good else np.nan})
    return pd.DataFrame(rows, columns=["minute", "pleth_bpm", "pleth_usable", "ecg_bpm", "ecg_ok", "both_good",
                                       "abs_diff_bpm"])


def _enmo_mg(acc_g: np.ndarray) -> np.ndarray:
    """ENMO in mg from an acceleration magnitude in g.

    If the median finite magnitude is 0.5–1.5 g the signal includes gravity and ENMO =
    max(|a| − 1 g, 0); otherwise gravity was already removed and ENMO = |a|.
    """
    a = np.asarray(acc_g, dtype=np.float64)
    a = np.where(np.isfinite(a), a, np.nan)  # ±inf is as invalid as NaN
    finite = a[np.isfinite(a)]
    with_gravity = finite.size > 0 and 0.5 <= float(np.median(finite)) <= 1.5
    enmo = np.maximum(a - 1.0, 0.0) if with_gravity else np.abs(a)
    return enmo * 1000.0


def activity_minutes(acc_g: np.ndarray, sampling_rate: float) -> pd.DataFrame:
    """Per-minute activity: one row per 60 s bin; columns minute, valid (≥ 20 s of finite samples),
    enmo_mg (mean ENMO of the finite samples, mg), sedentary (< 45 mg), active (≥ 100 mg),
    n_samples, n_finite."""
    fs = float(sampling_rate)
    enmo = _enmo_mg(acc_g)
    rows = []
    for m, (a, b) in enumerate(_minute_bounds(len(enmo), fs)):
        seg = enmo[a:b]
        n_finite = int(np.isfinite(seg).sum())
        valid = n_finite >= MIN_MINUTE_S * fs
        value = float(np.nanmean(seg)) if valid else np.nan
        rows.append({"minute": m, "valid": valid, "enmo_mg": value,
                     "sedentary": valid and value < SEDENTARY_MG, "active": valid and value >= ACTIVE_MG,
                     "n_samples": b - a, "n_finite": n_finite})
    return pd.DataFrame(rows, columns=["minute", "valid", "enmo_mg", "sedentary", "active", "n_samples", "n_finite"])


def _activity_from_minutes(minutes: pd.DataFrame, acc_g: np.ndarray) -> dict:
    valid = minutes[minutes["valid"]]
    if valid.empty:
        return {"activity_counts_per_min": np.nan, "sedentary_fraction": np.nan, "active_minutes": 0,
                "quality_flag": "no_signal", "quality_reason": "too_short" if minutes.empty else "missing_samples"}
    out = {
        "activity_counts_per_min": float(valid["enmo_mg"].mean()),
        "sedentary_fraction": float(valid["sedentary"].mean()),
        "active_minutes": int(valid["active"].sum()),
    }
    reasons = []
    if minutes["n_finite"].sum() / minutes["n_samples"].sum() < 0.8:
        reasons.append("missing_samples")
    a = np.asarray(acc_g, dtype=np.float64)
    if np.nanstd(a[np.isfinite(a)]) == 0:
        reasons.append("flat_signal")
    out["quality_flag"] = "low_quality" if reasons else "ok"
    out["quality_reason"] = ";".join(reasons)
    return out


def activity_features(acc_g: np.ndarray, sampling_rate: float) -> dict:
    """Activity summary from an acceleration magnitude (g) at `sampling_rate` Hz.

    activity_counts_per_min = mean over valid minutes of the minute's mean ENMO in mg (the
    "count" of this pipeline: ENMO-mg per minute, not ActiGraph counts); sedentary_fraction =
    share of valid minutes < 45 mg; active_minutes = number of valid minutes ≥ 100 mg;
    quality_flag "no_signal" (no valid minute) | "low_quality" (< 80 % of samples finite:
    "missing_samples"; zero variance: "flat_signal") | "ok".
    """
    return _activity_from_minutes(activity_minutes(acc_g, sampling_rate), acc_g)


_FLAG_RANK = {"ok": 0, "low_quality": 1, "no_signal": 2}


def wearable_features(ppg: np.ndarray, acc_g: np.ndarray, sampling_rate: float) -> dict:
    """PPG + activity features of one wearable record, plus resting heart rate.

    Keys: pulse_rate_bpm, prv_sdnn_ms, ppg_quality, ppg_quality_flag, ppg_quality_reason,
    activity_counts_per_min, sedentary_fraction, active_minutes, activity_quality_flag,
    activity_quality_reason, resting_hr_bpm, quality_flag, quality_reason.
    resting_hr_bpm = 10th percentile (numpy linear interpolation) of the per-minute pulse rate
    (60 / median IBI) over minutes that are both PPG-usable and sedentary (< 45 mg ENMO, valid);
    NaN when there is no such minute. quality_flag is the worse of the two stream flags
    (ok < low_quality < no_signal), quality_reason joins the non-empty stream reasons as
    "ppg:<reason>" / "activity:<reason>".
    """
    fs = float(sampling_rate)
    p_min = ppg_minutes(ppg, fs)
    a_min = activity_minutes(acc_g, fs)
    ppg_out = _ppg_from_minutes(p_min)
    act_out = _activity_from_minutes(a_min, acc_g)
    merged = p_min.merge(a_min, on="minute", how="inner")
    rest = merged[merged["usable"] & merged["valid"] & merged["sedentary"]]
    resting = float(np.percentile(rest["pulse_rate_bpm"], RESTING_HR_PERCENTILE)) if len(rest) else np.nan
    flag = max(ppg_out["quality_flag"], act_out["quality_flag"], key=_FLAG_RANK.__getitem__)
    reasons = [f"ppg:{ppg_out['quality_reason']}" if ppg_out["quality_reason"] else "",
               f"activity:{act_out['quality_reason']}" if act_out["quality_reason"] else ""]
    out = {
        "pulse_rate_bpm": ppg_out["pulse_rate_bpm"],
        "prv_sdnn_ms": ppg_out["prv_sdnn_ms"],
        "ppg_quality": ppg_out["ppg_quality"],
        "ppg_quality_flag": ppg_out["quality_flag"],
        "ppg_quality_reason": ppg_out["quality_reason"],
        "activity_counts_per_min": act_out["activity_counts_per_min"],
        "sedentary_fraction": act_out["sedentary_fraction"],
        "active_minutes": act_out["active_minutes"],
        "activity_quality_flag": act_out["quality_flag"],
        "activity_quality_reason": act_out["quality_reason"],
        "resting_hr_bpm": resting,
        "quality_flag": flag,
        "quality_reason": ";".join(r for r in reasons if r) if flag != "ok" else "",
    }
    return {k: out[k] for k in WEARABLE_FEATURE_KEYS}


# --------------------------------------------------------------------------------------------------
# Epoch / event series from consumer and research wearables (Fitbit JSON, ActiGraph / Actiwatch
# count CSVs; readers in twin_pipeline.sources.fitbit / .accelerometer).
# --------------------------------------------------------------------------------------------------
SEDENTARY_CPM = 100.0  # ActiGraph axis-1 counts/min below this = sedentary (Freedson et al. 1998)
MVPA_CPM = 1952.0  # ActiGraph axis-1 counts/min at or above this = moderate-to-vigorous (Freedson 1998)
MIN_HR_MINUTES = 10  # fewer minutes with heart-rate readings → "few_hr_minutes" (low_quality)
HR_PLAUSIBLE = (25.0, 230.0)  # bpm; readings outside are dropped as artefacts


def activity_count_features(
    counts: np.ndarray, epoch_s: float, *, sedentary_cpm: float = SEDENTARY_CPM, active_cpm: float = MVPA_CPM
) -> dict:
    """Activity summary from device counts per epoch (ActiGraph axis 1, Actiwatch activity, or steps).

    Counts are converted to counts/min (× 60 / epoch_s) and averaged per minute (consecutive
    epochs; NaN = non-wear or missing); a minute is valid when ≥ half of its epochs are finite.
    activity_counts_per_min = mean over valid minutes; sedentary_fraction = share of valid minutes
    < `sedentary_cpm`; active_minutes = valid minutes ≥ `active_cpm`. Flags: "no_signal" (no valid
    minute: "no_valid_minutes"), "low_quality" (< 80 % of epochs finite: "nonwear_or_missing";
    all counts equal: "flat_signal"), else "ok". Cut-points are device-specific: the defaults are
    ActiGraph axis-1 (Freedson 1998); pass others for Actiwatch or steps.
    """
    c = np.asarray(counts, dtype=np.float64)
    c = np.where(np.isfinite(c), c, np.nan)
    per_min = max(1, int(round(60.0 / float(epoch_s)))) if epoch_s < 60 else 1
    cpm = c * 60.0 / float(epoch_s)
    n_min = int(np.ceil(len(cpm) / per_min)) if len(cpm) else 0
    pad = np.full(n_min * per_min, np.nan)
    pad[: len(cpm)] = cpm
    blocks = pad.reshape(n_min, per_min) if n_min else pad.reshape(0, per_min)
    n_fin = np.isfinite(blocks).sum(axis=1)
    valid = n_fin * 2 >= per_min
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        minute = np.where(valid, np.nanmean(blocks, axis=1) if n_min else np.zeros(0), np.nan)
    if not valid.any():
        return {"activity_counts_per_min": np.nan, "sedentary_fraction": np.nan, "active_minutes": 0,
                "quality_flag": "no_signal", "quality_reason": "no_valid_minutes"}
    m = minute[valid]
    out = {"activity_counts_per_min": float(m.mean()), "sedentary_fraction": float(np.mean(m < sedentary_cpm)),
           "active_minutes": int(np.sum(m >= active_cpm))}
    reasons = []
    if np.isfinite(c).mean() < 0.8:
        reasons.append("nonwear_or_missing")
    if np.nanstd(c) == 0:
        reasons.append("flat_signal")
    out["quality_flag"] = "low_quality" if reasons else "ok"
    out["quality_reason"] = ";".join(reasons)
    return out


def heart_rate_series_features(times_s: np.ndarray, bpm: np.ndarray, *, rest_minutes: np.ndarray | None = None) -> dict:
    """Resting and mean heart rate from an irregular heart-rate series (e.g. Fitbit, ~5–15 s).

    Readings outside 25–230 bpm or NaN are dropped; the rest are averaged per clock minute
    (floor(times_s / 60)). resting_hr_bpm = 10th percentile of the per-minute means over the
    minutes listed in `rest_minutes` (minute numbers on the same clock, e.g. sedentary minutes)
    when given and any overlap, else over all minutes; hr_mean_bpm = mean of the per-minute means;
    hr_minutes = minutes with readings. Flags: "no_signal" ("no_hr_readings"), "low_quality"
    (< 10 minutes: "few_hr_minutes"), else "ok".
    """
    t = np.asarray(times_s, dtype=np.float64)
    h = np.asarray(bpm, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(h) & (h >= HR_PLAUSIBLE[0]) & (h <= HR_PLAUSIBLE[1])
    if not ok.any():
        return {"resting_hr_bpm": np.nan, "hr_mean_bpm": np.nan, "hr_minutes": 0,
                "quality_flag": "no_signal", "quality_reason": "no_hr_readings"}
    per_min = pd.Series(h[ok]).groupby(np.floor(t[ok] / 60.0).astype(np.int64)).mean()
    pool = per_min
    if rest_minutes is not None:
        rest = per_min[per_min.index.isin(np.asarray(rest_minutes, dtype=np.int64))]
        pool = rest if len(rest) else per_min
    out = {"resting_hr_bpm": float(np.percentile(pool.to_numpy(), RESTING_HR_PERCENTILE)),
           "hr_mean_bpm": float(per_min.mean()), "hr_minutes": int(len(per_min))}
    few = len(per_min) < MIN_HR_MINUTES
    out["quality_flag"] = "low_quality" if few else "ok"
    out["quality_reason"] = "few_hr_minutes" if few else ""
    return out


def fitbit_features(heart_rate: pd.DataFrame | None, steps: pd.DataFrame | None) -> dict:
    """Wearable features (WEARABLE_FEATURE_KEYS, plus hr_mean_bpm, hr_minutes, steps_per_day) from
    Fitbit exports read by `sources.fitbit` (heart_rate: time, bpm; steps: time, value per minute).

    There is no PPG waveform: pulse_rate_bpm = Fitbit's mean per-minute heart rate, prv_sdnn_ms and
    ppg_quality NaN. Activity = steps per minute as counts with sedentary < 1 step/min and active ≥
    100 steps/min (≈ moderate walking, Tudor-Locke et al. 2018), over the minutes the export lists.
    resting_hr_bpm uses the zero-step minutes when steps are given. steps_per_day = total steps /
    covered days (last − first listed minute + 1 min, in days). quality_flag = the worse flag of the
    exports given (an absent export is reported in its own stream's reason, not the overall flag).
    """
    nan_act = {"activity_counts_per_min": np.nan, "sedentary_fraction": np.nan, "active_minutes": 0,
               "quality_flag": "no_signal", "quality_reason": "no_steps_export"}
    t0 = None
    for df in (heart_rate, steps):
        if df is not None and len(df):
            t0 = df["time"].min() if t0 is None else min(t0, df["time"].min())
    act, rest, steps_per_day = nan_act, None, np.nan
    if steps is not None and len(steps):
        minute = ((steps["time"] - t0).dt.total_seconds() // 60).astype(np.int64).to_numpy()
        values = steps["value"].to_numpy(dtype=np.float64)
        act = activity_count_features(values, 60.0, sedentary_cpm=1.0, active_cpm=100.0)
        rest = minute[values < 1.0]
        days = ((steps["time"].max() - steps["time"].min()).total_seconds() + 60.0) / 86400.0
        steps_per_day = float(np.nansum(values) / days)
    if heart_rate is not None and len(heart_rate):
        secs = (heart_rate["time"] - t0).dt.total_seconds().to_numpy()
        hr = heart_rate_series_features(secs, heart_rate["bpm"].to_numpy(dtype=np.float64), rest_minutes=rest)
    else:
        hr = heart_rate_series_features(np.zeros(0), np.zeros(0))
        hr["quality_reason"] = "no_hr_export"
    present = [(n, r) for n, r, given in (("hr", hr, heart_rate is not None and len(heart_rate)),
                                           ("activity", act, steps is not None and len(steps))) if given]
    present = present or [("hr", hr), ("activity", act)]  # neither export: no_signal with both reasons
    flag = max((r["quality_flag"] for _, r in present), key=_FLAG_RANK.__getitem__)
    reasons = [f"{n}:{r['quality_reason']}" for n, r in present if r["quality_reason"]]
    return {
        "pulse_rate_bpm": hr["hr_mean_bpm"], "prv_sdnn_ms": np.nan, "ppg_quality": np.nan,
        "ppg_quality_flag": hr["quality_flag"], "ppg_quality_reason": hr["quality_reason"],
        "activity_counts_per_min": act["activity_counts_per_min"], "sedentary_fraction": act["sedentary_fraction"],
        "active_minutes": act["active_minutes"], "activity_quality_flag": act["quality_flag"],
        "activity_quality_reason": act["quality_reason"], "resting_hr_bpm": hr["resting_hr_bpm"],
        "quality_flag": flag, "quality_reason": ";".join(r for r in reasons if r) if flag != "ok" else "",
        "hr_mean_bpm": hr["hr_mean_bpm"], "hr_minutes": hr["hr_minutes"], "steps_per_day": steps_per_day,
    }


def raw_accelerometer_features(
    acc_g: np.ndarray,
    sampling_rate: float,
    *,
    hr_time_s: np.ndarray | None = None,
    hr_bpm: np.ndarray | None = None,
    notes: tuple[str, ...] = (),
) -> dict:
    """Wearable features (WEARABLE_FEATURE_KEYS, plus hr_mean_bpm and hr_minutes) of a raw
    accelerometer recording (e.g. `sources.raw_accelerometer`): acceleration in g, (n, 3) axes or
    (n,) magnitude, at `sampling_rate` Hz, NaN = no sample.

    Activity = :func:`activity_features` on the vector magnitude (ENMO per minute in mg, sedentary
    < 45 mg, active ≥ 100 mg). Heart rate (optional; e.g. the Matrix's optical HR channel, bpm at
    `hr_time_s` seconds from the first acceleration sample) → :func:`heart_rate_series_features`
    with the sedentary minutes as rest minutes: resting_hr_bpm = 10th percentile of the per-minute
    HR over sedentary minutes (all minutes when none overlap), pulse_rate_bpm = hr_mean_bpm = mean
    per-minute HR. Without HR the PPG stream is NaN with reason "no_ppg_in_export" and does not lower
    quality_flag. `notes` from the reader (e.g. "truncated_file") make the activity stream
    low_quality with the note as reason. prv_sdnn_ms and ppg_quality are NaN (no waveform).
    """
    acc = np.asarray(acc_g, dtype=np.float64)
    mag = np.sqrt(np.sum(acc**2, axis=1)) if acc.ndim == 2 else acc
    fs = float(sampling_rate)
    a_min = activity_minutes(mag, fs)
    act = _activity_from_minutes(a_min, mag)
    if notes:
        act["quality_reason"] = ";".join([r for r in (act["quality_reason"],) if r] + list(notes))
        if act["quality_flag"] == "ok":
            act["quality_flag"] = "low_quality"
    has_hr = hr_bpm is not None and len(hr_bpm) > 0
    streams = [("activity", act)]
    if has_hr:
        rest = a_min.loc[a_min["valid"] & a_min["sedentary"], "minute"].to_numpy()
        hr = heart_rate_series_features(np.asarray(hr_time_s, dtype=np.float64), np.asarray(hr_bpm, dtype=np.float64),
                                        rest_minutes=rest)
        streams.append(("hr", hr))
        ppg_flag, ppg_reason = hr["quality_flag"], hr["quality_reason"]
    else:
        hr = {"resting_hr_bpm": np.nan, "hr_mean_bpm": np.nan, "hr_minutes": 0}
        ppg_flag, ppg_reason = "no_signal", "no_ppg_in_export"
    flag = max((r["quality_flag"] for _, r in streams), key=_FLAG_RANK.__getitem__)
    reasons = [f"{n}:{r['quality_reason']}" for n, r in streams if r["quality_reason"]]
    return {
        "pulse_rate_bpm": hr["hr_mean_bpm"], "prv_sdnn_ms": np.nan, "ppg_quality": np.nan,
        "ppg_quality_flag": ppg_flag, "ppg_quality_reason": ppg_reason,
        "activity_counts_per_min": act["activity_counts_per_min"], "sedentary_fraction": act["sedentary_fraction"],
        "active_minutes": act["active_minutes"], "activity_quality_flag": act["quality_flag"],
        "activity_quality_reason": act["quality_reason"], "resting_hr_bpm": hr["resting_hr_bpm"],
        "quality_flag": flag, "quality_reason": ";".join(reasons) if flag != "ok" else "",
        "hr_mean_bpm": hr["hr_mean_bpm"], "hr_minutes": hr["hr_minutes"],
    }
