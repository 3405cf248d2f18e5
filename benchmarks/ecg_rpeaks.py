"""R-peak accuracy and speed on the 18 annotated MIT-BIH records and the nstdb 118 noise-stress excerpts.

Side by side in one run: neurokit2 `ecg_peaks(ecg_clean(x))` (channel 0), neurokit2 `ecg_process`
(channel 0; on records 100, 203, 228 only unless --process-all: it runs at ~150× real time), wfdb
`xqrs_detect` (channel 0), and this package's kernel `ecg_peaks_leads` on channel 0 alone and on both
leads. Scoring: every reference beat annotation (symbols NLRBAaJSVrFejnE/fQ?) matched one-to-one to a
detection within ±150 ms; Se = TP / reference beats, +P = TP / detections, F1 = 2TP / (ref + det),
pooled over records for "overall"; mean |Δt| = mean distance of matched detections from their
annotation (ms). Speed = seconds of signal / wall seconds of detection (reading excluded), one process,
median over --repeats (default 3) repeats of every detector; within a record the detectors run
interleaved, repeat by repeat, so each repeat's sums compare them under the same machine load.
"speed ÷ nk ecg_peaks" = median over repeats of (nk ecg_peaks time / detector time) on the same
records, by wall clock and by CPU time of the process (all threads; less sensitive to other load).

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


def match(ref: np.ndarray, det: np.ndarray, tol: int) -> tuple[int, np.ndarray]:
    """(true positives, |detection − annotation| in samples of each): reference beats matched
    one-to-one to a detection within ±tol samples (the earliest unused one)."""
    det = np.sort(np.asarray(det, dtype=np.int64))
    used = np.zeros(len(det), dtype=bool)
    offsets = []
    for r in ref:
        i = int(np.searchsorted(det, r - tol))
        while i < len(det) and det[i] <= r + tol:
            if not used[i]:
                used[i] = True
                offsets.append(abs(int(det[i]) - int(r)))
                break
            i += 1
    return len(offsets), np.asarray(offsets, dtype=np.float64)


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
    "neurokit2 ecg_peaks(ecg_clean)": nk_peaks,
    "neurokit2 ecg_process": nk_process,
    "wfdb xqrs_detect": xqrs,
    "twin (ours), lead 0": twin_one,
    "twin (ours), both leads": twin_both,
}


def timed(fn, x, fs) -> tuple[np.ndarray, float, float]:
    """(detections, wall s, CPU s of this process: all its threads) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(x, fs)
    return np.asarray(out, dtype=np.int64), time.perf_counter() - w0, time.process_time() - c0


def f(v: float) -> str:
    return "—" if v != v else f"{v:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--process-all", action="store_true", help="run ecg_process on all 18 records")
    args = ap.parse_args()
    repeats = max(1, args.repeats)
    logging.getLogger("wfdb").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    neurokit()  # import cost not timed

    names = list(DETECTORS)
    base = names[0]  # neurokit2 ecg_peaks(ecg_clean): the speed reference
    acc = {n: [0, 0, 0] for n in names}  # reference beats, detections, TP (pooled)
    dt_ms: dict[str, list[np.ndarray]] = {n: [] for n in names}  # |detection − annotation| of TPs
    sig = {n: 0.0 for n in names}  # seconds of signal each detector ran on
    wall = {n: np.zeros(repeats) for n in names}  # per repeat: wall s summed over records
    cpu = {n: np.zeros(repeats) for n in names}
    pair = np.zeros((repeats, 2))  # per repeat: nk ecg_peaks and ours (both leads) wall on the same records
    rows = []
    for rec_name in RECORDS:
        rec = wfdb.rdrecord(str(DATA / "mitdb" / rec_name))
        ann = wfdb.rdann(str(DATA / "mitdb" / rec_name), "atr")
        ref = ann.sample[np.isin(ann.symbol, BEAT_SYMBOLS)]
        x, fs = rec.p_signal, float(rec.fs)
        tol = int(round(TOL_S * fs))
        row = [rec_name, str(len(ref))]
        run = [n for n in names if n != "neurokit2 ecg_process" or args.process_all or rec_name in PROCESS_RECORDS]
        dets = {}
        for r in range(repeats):  # detectors interleaved within a repeat: they share the machine's load
            for n in run:
                det, w, c = timed(DETECTORS[n], x, fs)
                dets.setdefault(n, det)
                wall[n][r] += w
                cpu[n][r] += c
        for n in names:
            if n not in run:
                row.append("—")
                continue
            tp, offsets = match(ref, dets[n], tol)
            a = acc[n]
            a[0] += len(ref); a[1] += len(dets[n]); a[2] += tp  # noqa: E702
            sig[n] += len(x) / fs
            dt_ms[n].append(offsets / fs * 1000.0)
            row.append(f(2 * tp / (len(ref) + len(dets[n]))))
        rows.append(row)

    print(f"## R-peak F1 per MIT-BIH record (±{TOL_S * 1000:.0f} ms, all annotated beats)\n")
    print("| record | beats | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n## Overall (pooled over records; speed = median over {repeats} repeats, same run)\n")
    print("| detector | records | Se | +P | F1 | mean \\|Δt\\| ms | speed (× real time, wall) "
          "| speed ÷ nk ecg_peaks (wall) | speed ÷ nk ecg_peaks (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    same = {n: sig[n] == sig[base] for n in names}  # ratios only over the same records
    for n in names:
        r, d, tp = acc[n]
        k = sum(1 for row in rows if row[2 + names.index(n)] != "—")
        speed = statistics.median(sig[n] / wall[n])
        ratio_w = f"{statistics.median(wall[base] / wall[n]):.2f}" if same[n] else "—"
        ratio_c = f"{statistics.median(cpu[base] / cpu[n]):.2f}" if same[n] else "—"
        mean_dt = float(np.mean(np.concatenate(dt_ms[n]))) if dt_ms[n] else float("nan")
        print(f"| {n} | {k} | {f(tp / r)} | {f(tp / max(d, 1))} | {f(2 * tp / (r + d))} | {mean_dt:.1f} "
              f"| {speed:,.0f}× | {ratio_w} | {ratio_c} |")
    print("\nPer repeat, wall s over the 18 records: "
          + "; ".join(f"{n}: " + ", ".join(f"{v:.2f}" for v in wall[n]) for n in (base, "twin (ours), both leads")))
    worst = {n: min((float(row[2 + i]), row[0]) for row in rows if row[2 + i] != "—") for i, n in enumerate(names)}
    print("\nLowest record F1: " + "; ".join(f"{n}: {v:.4f} ({r})" for n, (v, r) in worst.items()))
    no207 = {n: min((float(row[2 + i]), row[0]) for row in rows if row[2 + i] != "—" and row[0] != "207")
             for i, n in enumerate(names)}
    print("Lowest record F1 without 207: " + "; ".join(f"{n}: {v:.4f} ({r})" for n, (v, r) in no207.items()))

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
            det, _, _ = timed(DETECTORS[n], x, fs)
            tp, _ = match(ref, det, tol)
            cells.append(f(2 * tp / (len(ref) + len(det))))
        print(f"| {rec_name[-2:]} dB | {len(ref)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
