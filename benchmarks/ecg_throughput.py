"""Full ECG feature extraction throughput and peak memory vs neurokit2 `ecg_process` + HRV (time + frequency).

Ours: `twin_pipeline.lib.ecg.ecg_features(leads, fs, window_s=300)` on both leads: per 5-min window
lead checks (NaN, flat, saturation), fused R-peaks, template SQI, then NN/HRV over the record: time
domain (mean NN, SDNN, RMSSD, pNN50, irregular-RR fraction) and frequency domain (LF, HF, LF/HF:
Welch on the 4-Hz cubic-interpolated NN series in ≈ 5-min segments). Reference: `nk.ecg_process(lead
0)` (clean, peaks, rate, quality, delineation) then `nk.hrv_time` + `nk.hrv_frequency` (normalize=False,
so LF/HF are in ms²) on the peaks of each 5-min window, the way a neurokit2 user gets the same
feature families; the LF/HF table compares our values with the mean of those windows.
Speed = signal seconds / wall seconds (median of --repeats; reference: median of --ref-repeats, default 1,
since one run takes ~10 s per 30-min record). Peak memory =
tracemalloc peak of the call (Python + numpy allocations; the input array itself excluded), on
record 100 tiled to 5 min … 8 h.

    .venv/bin/python benchmarks/ecg_throughput.py [--repeats 3] [--ref-repeats 1]

Data: PhysioNet MIT-BIH Arrhythmia Database (Moody & Mark 2001; Goldberger et al. 2000), ODC-By 1.0.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import wfdb

from twin_pipeline.lib.ecg import ecg_features, neurokit

MITDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "ecg" / "mitdb"
RECORDS = ("100", "203", "228")
WINDOW_S = 300


def ours(x: np.ndarray, fs: float) -> dict:
    return ecg_features({"MLII": x[:, 0], "V5": x[:, 1]}, fs, window_s=WINDOW_S)


def reference(x: np.ndarray, fs: float) -> list:
    nk = neurokit()
    _, info = nk.ecg_process(x[:, 0], sampling_rate=fs)
    peaks = np.asarray(info["ECG_R_Peaks"])
    w = int(WINDOW_S * fs)
    out = []
    for a in range(0, len(x), w):
        p = peaks[(peaks >= a) & (peaks < a + w)] - a
        if len(p) > 10:
            out.append((nk.hrv_time(p, sampling_rate=fs), nk.hrv_frequency(p, sampling_rate=fs, normalize=False)))
    return out


def wall(fn, x, fs, repeats: int) -> tuple[float, object]:
    """(median wall s over `repeats` calls, the last call's result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(x, fs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_mb(fn, x, fs) -> float:
    tracemalloc.start()
    fn(x, fs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-repeats", type=int, default=1, help="repeats of the (slow) neurokit2 reference")
    args = ap.parse_args()
    logging.getLogger("wfdb").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    neurokit()

    print("## ECG feature extraction, 30-min MIT-BIH records (2 leads, 360 Hz)\n")
    print("| record | ours: s | ours: × real time | nk ecg_process+hrv: s | nk: × real time | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    tot_sig = tot_ours = tot_ref = 0.0
    spectra = []
    for name in RECORDS:
        rec = wfdb.rdrecord(str(MITDB / name))
        x, fs = rec.p_signal, float(rec.fs)
        dur = len(x) / fs
        t_ours, f_ours = wall(ours, x, fs, args.repeats)
        t_ref, f_ref = wall(reference, x, fs, args.ref_repeats)
        lf = float(np.mean([fr["HRV_LF"].iloc[0] for _, fr in f_ref]))
        hf = float(np.mean([fr["HRV_HF"].iloc[0] for _, fr in f_ref]))
        spectra.append((name, f_ours, lf, hf))
        tot_sig += dur
        tot_ours += t_ours
        tot_ref += t_ref
        print(f"| {name} | {t_ours:.2f} | {dur / t_ours:,.0f}× | {t_ref:.2f} | {dur / t_ref:,.0f}× | {t_ref / t_ours:.0f}× |")
    print(f"| all | {tot_ours:.2f} | {tot_sig / tot_ours:,.0f}× | {tot_ref:.2f} | {tot_sig / tot_ref:,.0f}× "
          f"| {tot_ref / tot_ours:.0f}× |")

    print("\n## Frequency-domain HRV, same records (ours: whole record in ≈ 5-min segments; nk: mean of its "
          "5-min windows on its own peaks)\n")
    print("| record | ours LF ms² | nk LF ms² | ours HF ms² | nk HF ms² | ours LF/HF | nk LF/HF (of means) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, fo, lf, hf in spectra:
        print(f"| {name} | {fo['hrv_lf_ms2']:,.0f} | {lf:,.0f} | {fo['hrv_hf_ms2']:,.0f} | {hf:,.0f} "
              f"| {fo['hrv_lf_hf']:.3f} | {lf / hf:.3f} |")

    print("\n## Peak memory vs record length (record 100 tiled, tracemalloc peak, MB)\n")
    print("| length | input (2 leads, float64) MB | ours: peak MB | nk ecg_process+hrv: peak MB |")
    print("|---|---:|---:|---:|")
    rec = wfdb.rdrecord(str(MITDB / "100"))
    base, fs = rec.p_signal, float(rec.fs)
    for hours in (5 / 60, 0.5, 2.0, 8.0):
        n = int(hours * 3600 * fs)
        x = np.ascontiguousarray(np.tile(base, (int(np.ceil(n / len(base))), 1))[:n])
        ref_mb = f"{peak_mb(reference, x, fs):.0f}" if hours <= 0.5 else "not run"
        label = f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.0f} h"
        print(f"| {label} | {x.nbytes / 1e6:.0f} | {peak_mb(ours, x, fs):.0f} | {ref_mb} |")


if __name__ == "__main__":
    main()
