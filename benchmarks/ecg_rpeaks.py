"""R-peak accuracy and speed on the 18 annotated MIT-BIH records and the nstdb 118 noise-stress excerpts.

Side by side in one run: neurokit2 `ecg_peaks(ecg_clean(x))` (channel 0), neurokit2 `ecg_process`
(channel 0; on records 100, 203, 228 only unless --process-all: it runs at ~150× real time), wfdb
`xqrs_detect` (channel 0), and this package's kernel `ecg_peaks_leads` on channel 0 alone and on both
leads. Scoring: every reference beat annotation (symbols NLRBAaJSVrFejnE/fQ?) matched one-to-one to a
detection within ±150 ms; Se = TP / reference beats, +P = TP / detections, F1 = 2TP / (ref + det),
pooled over records for "overall". Speed = seconds of signal / wall seconds of detection (reading
excluded), one process, median of --repeats runs (xqrs and ecg_process: one run).

    .venv/bin/python benchmarks/ecg_rpeaks.py [--repeats 3] [--process-all]

Data: PhysioNet MIT-BIH Arrhythmia Database (Moody & Mark 2001; Goldberger et al. 2000), ODC-By 1.0,
and MIT-BIH Noise Stress Test record 118, read in place from ../shared/data/ecg.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import wfdb
import wfdb.processing

from twin_pipeline.lib.ecg import ecg_peaks_leads, neurokit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ecg"
RECORDS = "100 101 103 105 106 108 119 200 201 203 207 208 210 213 215 219 221 228".split()
PROCESS_RECORDS = ("100", "203", "228")
BEAT_SYMBOLS = list("NLRBAaJSVrFejnE/fQ?")
NSTDB = ("118e24", "118e12", "118e06", "118e00")
TOL_S = 0.150


def match(ref: np.ndarray, det: np.ndarray, tol: int) -> int:
    """True positives: reference beats matched one-to-one to a detection within ±tol samples."""
    det = np.sort(np.asarray(det, dtype=np.int64))
    used = np.zeros(len(det), dtype=bool)
    tp = 0
    for r in ref:
        i = int(np.searchsorted(det, r - tol))
        while i < len(det) and det[i] <= r + tol:
            if not used[i]:
                used[i] = True
                tp += 1
                break
            i += 1
    return tp


def nk_peaks(x, fs):
    nk = neurokit()
    _, info = nk.ecg_peaks(nk.ecg_clean(x[:, 0], sampling_rate=fs), sampling_rate=fs)
    return info["ECG_R_Peaks"]


def nk_process(x, fs):
    _, info = neurokit().ecg_process(x[:, 0], sampling_rate=fs)
    return info["ECG_R_Peaks"]


def xqrs(x, fs):
    return wfdb.processing.xqrs_detect(x[:, 0], fs=fs, verbose=False)


def twin_one(x, fs):
    return ecg_peaks_leads(x[:, :1], fs)


def twin_both(x, fs):
    return ecg_peaks_leads(x, fs)


DETECTORS = {
    "neurokit2 ecg_peaks(ecg_clean)": (nk_peaks, False),
    "neurokit2 ecg_process": (nk_process, True),
    "wfdb xqrs_detect": (xqrs, True),
    "twin (ours), lead 0": (twin_one, False),
    "twin (ours), both leads": (twin_both, False),
}


def timed(fn, x, fs, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(x, fs)
        times.append(time.perf_counter() - t0)
    return np.asarray(out, dtype=np.int64), statistics.median(times)


def f(v: float) -> str:
    return "—" if v != v else f"{v:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--process-all", action="store_true", help="run ecg_process on all 18 records")
    args = ap.parse_args()
    logging.getLogger("wfdb").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    neurokit()  # import cost not timed

    names = list(DETECTORS)
    tot = {n: [0, 0, 0, 0.0, 0.0] for n in names}  # ref, det, tp, signal s, wall s
    rows = []
    for rec_name in RECORDS:
        rec = wfdb.rdrecord(str(DATA / "mitdb" / rec_name))
        ann = wfdb.rdann(str(DATA / "mitdb" / rec_name), "atr")
        ref = ann.sample[np.isin(ann.symbol, BEAT_SYMBOLS)]
        x, fs = rec.p_signal, float(rec.fs)
        tol = int(round(TOL_S * fs))
        row = [rec_name, str(len(ref))]
        for n in names:
            fn, slow = DETECTORS[n]
            if fn is nk_process and not args.process_all and rec_name not in PROCESS_RECORDS:
                row.append("—")
                continue
            det, wall = timed(fn, x, fs, 1 if slow else args.repeats)
            tp = match(ref, det, tol)
            t = tot[n]
            t[0] += len(ref); t[1] += len(det); t[2] += tp; t[3] += len(x) / fs; t[4] += wall  # noqa: E702
            row.append(f(2 * tp / (len(ref) + len(det))))
        rows.append(row)

    print(f"## R-peak F1 per MIT-BIH record (±{TOL_S * 1000:.0f} ms, all annotated beats)\n")
    print("| record | beats | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n## Overall (pooled over records)\n")
    print("| detector | records | Se | +P | F1 | speed (× real time) |")
    print("|---|---:|---:|---:|---:|---:|")
    for n in names:
        r, d, tp, sig, wall = tot[n]
        k = len(RECORDS) if n != "neurokit2 ecg_process" or args.process_all else len(PROCESS_RECORDS)
        print(f"| {n} | {k} | {f(tp / r)} | {f(tp / max(d, 1))} | {f(2 * tp / (r + d))} | {sig / wall:,.0f}× |")
    worst = {n: min((float(row[2 + i]), row[0]) for row in rows if row[2 + i] != "—") for i, n in enumerate(names)}
    print("\nLowest record F1: " + "; ".join(f"{n}: {v:.4f} ({r})" for n, (v, r) in worst.items()))

    print("\n## MIT-BIH noise stress test, record 118 (single lead, 120 s, 360 Hz)\n")
    print("| SNR | beats | " + " | ".join(f"{n} F1" for n in names if n != "twin (ours), both leads") + " |")
    print("|---|---:|" + "---:|" * (len(names) - 1))
    for rec_name in NSTDB:
        x = np.loadtxt(DATA / "nstdb_118" / f"{rec_name}.csv", delimiter=",").reshape(-1, 1)
        ref = np.loadtxt(DATA / "nstdb_118" / f"{rec_name}_ann.csv", delimiter=",").astype(np.int64).ravel()
        fs = 360.0
        tol = int(round(TOL_S * fs))
        cells = []
        for n in names:
            if n == "twin (ours), both leads":
                continue
            det, _ = timed(DETECTORS[n][0], x, fs, 1)
            tp = match(ref, det, tol)
            cells.append(f(2 * tp / (len(ref) + len(det))))
        print(f"| {rec_name[-2:]} dB | {len(ref)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
