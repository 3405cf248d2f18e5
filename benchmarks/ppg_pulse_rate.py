"""PPG pulse rate: this package's `ppg_features` / `ppg_minutes` against neurokit2, side by side.

Recordings: the four PPG files of ../shared/data/wearable/ppg (heartpy: clean 100 Hz finger PPG,
a ~117 Hz recording with motion artefacts, 11 min "in the wild" at 100 Hz, 48 min smart-ring PPG
at 32 Hz with NaN gaps) and the PLETH channel of the bedside records a103l and v102s (250 Hz).
No file carries reference beats, so two neurokit2 pipelines are the reference:

* nk `ppg_process` — `ppg_clean` + Elgendi peaks + `PPG_Rate` (the same detector family as ours,
  without our per-minute artefact rules);
* nk MSPTDfast — `ppg_findpeaks(ppg_clean(x), method="charlton")` (Charlton et al. 2024/25), an
  independent detector.

neurokit2 cannot take NaN: each reference runs on every finite stretch ≥ 8 s on its own. Reference
inter-beat intervals are those between successive peaks of one stretch, 0.3–2 s. Record rate =
60000 / mean IBI (ours: usable minutes only; `ppg_process`: also the mean of its PPG_Rate column).
Minute agreement: for each minute ours marks usable, our minute rate (60000 / mean accepted IBI)
vs the reference's over the IBIs ending in the same minute; "MAD" = median |difference| in bpm,
"≤3" = share of those minutes within 3 bpm; a minute where the reference has < 5 IBIs counts as
a disagreement of ∞ ("–" when that makes the median ∞). Speed = seconds of signal / wall
seconds (reading excluded, one process; ours includes the per-minute quality checks).

Second table, bedside PLETH only: the ECG of the same record is a true reference. Per minute the
ECG heart rate is `ecg_features` on the minute's leads (kept when that minute's flag is "ok"); each
PPG pipeline's minute rate (as above; ours only on its usable minutes) is compared with it.

    .venv/bin/python benchmarks/ppg_pulse_rate.py

Data: heartpy (paulvangentcom/heartrate_analysis_python, MIT); PhysioNet Challenge 2015 alarm
records via wfdb-python sample-data (open access).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from twin_pipeline.lib.ecg import finite_runs, neurokit
from twin_pipeline.lib.waveform import ecg_leads
from twin_pipeline.lib.wearable import pleth_ecg_minutes, ppg_features, ppg_minutes
from twin_pipeline.sources.ppg_csv import read_signal_csv
from twin_pipeline.sources.wfdb_io import read_record

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CSV = [("data.csv", 100.0), ("data2.csv", None), ("data3.csv", None), ("ring_data.csv", 32.0)]
BEDSIDE = ("a103l", "v102s")
MIN_RUN_S = 8.0


def recordings() -> list[tuple[str, np.ndarray, float]]:
    out = []
    for name, rate in CSV:
        x, fs = read_signal_csv(DATA / "wearable" / "ppg" / name, rate)
        out.append((name, x, fs, None))
    for rec_name in BEDSIDE:
        rec = read_record(DATA / "bedside" / rec_name, resample_to="fastest")
        out.append((f"{rec_name} PLETH", rec.signals["PLETH"], rec.sampling_rate, ecg_leads(rec)))
    return out


def nk_reference(x: np.ndarray, fs: float, method: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(peak sample indices, IBI-end sample indices, IBIs in s, mean PPG_Rate or NaN, wall seconds)."""
    nk = neurokit()
    t = time.perf_counter()
    ends, ibis, rates = [], [], []
    for r0, r1 in finite_runs(x, int(round(MIN_RUN_S * fs))):
        seg = x[r0:r1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if method == "process":
                    signals, info = nk.ppg_process(seg, sampling_rate=fs)
                    peaks = np.asarray(info["PPG_Peaks"], dtype=np.int64)
                    rates.append(signals["PPG_Rate"].to_numpy())
                else:
                    cleaned = nk.ppg_clean(seg, sampling_rate=fs)
                    # its window arithmetic needs an integer rate; the rate only sets window lengths
                    found = nk.ppg_findpeaks(cleaned, sampling_rate=int(round(fs)), method="charlton")
                    peaks = np.asarray(found["PPG_Peaks"], dtype=np.int64)
            except (ValueError, IndexError, ZeroDivisionError):
                continue
        if len(peaks) > 1:
            ends.append(peaks[1:] + r0)
            ibis.append(np.diff(peaks) / fs)
    wall = time.perf_counter() - t
    end = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    ibi = np.concatenate(ibis) if ibis else np.zeros(0)
    ok = (ibi >= 0.3) & (ibi <= 2.0)
    mean_rate = float(np.nanmean(np.concatenate(rates))) if rates else float("nan")
    return end[ok], ibi[ok], mean_rate, wall


def minute_rate(end: np.ndarray, ibi: np.ndarray, minute: int, fs: float) -> float:
    """Reference rate of one minute: 60 / mean of the IBIs ending in it (NaN below 5 IBIs)."""
    step = int(round(60.0 * fs))
    sel = (end >= minute * step) & (end < (minute + 1) * step)
    return 60.0 / float(np.mean(ibi[sel])) if sel.sum() >= 5 else float("nan")


def minute_agreement(minutes, end: np.ndarray, ibi: np.ndarray, fs: float) -> tuple[float, float, int]:
    diffs = []
    for m in minutes[minutes["usable"]].itertuples(index=False):
        ref = minute_rate(end, ibi, m.minute, fs)  # NaN: the reference found no beats in a minute we kept
        diffs.append(abs(60000.0 / np.mean(m.ibi_ms) - ref) if np.isfinite(ref) else np.inf)
    d = np.asarray(diffs)
    if not len(d):
        return float("nan"), float("nan"), 0
    return float(np.median(d)), float(np.mean(d <= 3.0)), len(d)


def fmt(v: float, nd: int = 1) -> str:
    return "–" if not np.isfinite(v) else f"{v:.{nd}f}"


def main() -> None:
    recs = recordings()
    ppg_features(recs[0][1], recs[0][2])  # warm up: neurokit2 import
    vs_ecg = []
    print("| recording | s | fs Hz | ours bpm | ours flag | usable min | nk ppg_process bpm (IBI / PPG_Rate) "
          "| nk MSPTDfast bpm | minute MAD vs process | ≤3 bpm | minute MAD vs MSPTDfast | ≤3 bpm "
          "| ours × rt | process × rt | MSPTDfast × rt |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    total = {"ours": 0.0, "process": 0.0, "msptd": 0.0}
    secs = 0.0
    for name, x, fs, leads in recs:
        dur = len(x) / fs
        secs += dur
        t = time.perf_counter()
        minutes = ppg_minutes(x, fs)
        feats = ppg_features(x, fs)
        ours_wall = (time.perf_counter() - t) / 2  # both calls run the same minute analysis
        p_end, p_ibi, p_rate, p_wall = nk_reference(x, fs, "process")
        c_end, c_ibi, _, c_wall = nk_reference(x, fs, "msptd")
        total["ours"] += ours_wall
        total["process"] += p_wall
        total["msptd"] += c_wall
        if leads is not None:
            vs_ecg.append((name, pleth_ecg_minutes(x, leads, fs), (p_end, p_ibi), (c_end, c_ibi), fs))
        p_mad, p_in, _ = minute_agreement(minutes, p_end, p_ibi, fs)
        c_mad, c_in, n_min = minute_agreement(minutes, c_end, c_ibi, fs)
        print(f"| {name} | {dur:.0f} | {fs:.1f} | {fmt(feats['pulse_rate_bpm'])} | {feats['quality_flag']} "
              f"| {int(minutes['usable'].sum())}/{len(minutes)} "
              f"| {fmt(60.0 / p_ibi.mean() if len(p_ibi) else np.nan)} / {fmt(p_rate)} "
              f"| {fmt(60.0 / c_ibi.mean() if len(c_ibi) else np.nan)} | {fmt(p_mad, 2)} | {fmt(100 * p_in, 0)} % "
              f"| {fmt(c_mad, 2)} | {fmt(100 * c_in, 0)} % | {dur / ours_wall:,.0f} | {dur / p_wall:,.0f} "
              f"| {dur / c_wall:,.0f} |")
    print(f"| **all** | {secs:.0f} | | | | | | | | | | | {secs / total['ours']:,.0f} | {secs / total['process']:,.0f} "
          f"| {secs / total['msptd']:,.0f} |")
    print()
    print("| bedside record | ECG-ok minutes | ours: minutes, median / max abs diff bpm "
          "| nk ppg_process: minutes, median / max | nk MSPTDfast: minutes, median / max |")
    print("|---|---|---|---|---|")
    pooled: dict[str, list[float]] = {"ours": [], "process": [], "msptd": []}
    for name, table, (p_end, p_ibi), (c_end, c_ibi), fs in vs_ecg:
        ok = table[table["ecg_ok"]]
        cells = []
        for key, rates in (
            ("ours", [r.pleth_bpm if r.pleth_usable else np.nan for r in ok.itertuples()]),
            ("process", [minute_rate(p_end, p_ibi, r.minute, fs) for r in ok.itertuples()]),
            ("msptd", [minute_rate(c_end, c_ibi, r.minute, fs) for r in ok.itertuples()]),
        ):
            d = np.abs(np.asarray(rates, dtype=float) - ok["ecg_bpm"].to_numpy())
            d = d[np.isfinite(d)]
            pooled[key].extend(d.tolist())
            med, worst = (np.median(d), d.max()) if len(d) else (np.nan, np.nan)
            cells.append(f"{len(d)}, {fmt(med, 2)} / {fmt(worst, 2)}")
        print(f"| {name} | {len(ok)} | " + " | ".join(cells) + " |")
    cells = [f"{len(v)}, {fmt(np.median(v), 2)} / {fmt(max(v), 2)}" if v else "0" for v in pooled.values()]
    print("| **pooled** | | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
