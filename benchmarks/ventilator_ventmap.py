"""Ventilator breath metrics vs the ventMAP project's own per-breath metadata (PB-840 file 0149_…).

Ours, three ways: `read_pb840` then `breath_table(paw, flow, 50)` with breaths segmented from flow
alone ("flow only", what WFDB ventilator records get), with the ventilator's own BS/BE markers
(`breath_segments_from_markers`, what PB-840 exports get), and `pressure_breath_table(paw, 50)`
from airway pressure alone ("pressure only", what pressure-only exports such as the rapidalarm
test-lung files get; no volumes). Reference: `…_v5_1_0__breath_meta.csv_test`, computed by
ventMAP (hahnicity/ventMAP, GPL-3.0) for the same file from the BS/BE markers. A reference breath
is matched when one of our breaths starts within ±0.30 s of its breath start (BS) time,
one-to-one. For matched breaths: median absolute difference (and as % of the reference median)
of RR (ventMAP inst_RR), inspired and expired tidal volume (tvi, tve), I:E, PEEP and PIP.
Issue #5 target: ≥ 98 % of ventMAP's breaths matched and median absolute differences of RR, VT,
I:E and PEEP within 5 %. Timing: median of --repeats.

    .venv/bin/python benchmarks/ventilator_ventmap.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.lib.ventilator import (
    breath_segments_from_markers,
    breath_table,
    pressure_breath_table,
    read_pb840,
)

PB840 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ventilator" / "pb840"
WAVES = PB840 / "0149_2016-02-17-08-38-13_1.csv_test"
META = PB840 / "0149_2016-02-17-08-38-13_1_v5_1_0__breath_meta.csv_test"
TOL_S = 0.30
METRICS = [  # (label, our column, ventMAP column)
    ("RR (/min)", "resp_rate_bpm", "inst_RR"),
    ("VT insp (mL)", "tidal_volume_insp_ml", "tvi"),
    ("VT exp (mL)", "tidal_volume_exp_ml", "tve"),
    ("I:E", "ie_ratio", "I:E ratio"),
    ("PEEP (cmH2O)", "peep_cmh2o", "PEEP"),
    ("PIP (cmH2O)", "pip_cmh2o", "PIP"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    df = read_pb840(WAVES)
    fs = float(df.attrs["sampling_rate"])
    paw, flow = df["pressure_cmh2o"].to_numpy(), df["flow_l_min"].to_numpy()
    meta = pd.read_csv(META)
    meta.columns = [c.strip() for c in meta.columns]
    meta = meta.loc[:, ~meta.columns.duplicated()]
    dur = len(flow) / fs
    variants = {
        "flow only": lambda: breath_table(paw, flow, fs),
        "BS/BE markers": lambda: breath_table(
            paw, flow, fs,
            segments=breath_segments_from_markers(df["breath_start"], df["breath_end"], flow, fs)),
        "pressure only": lambda: pressure_breath_table(paw, fs),
    }
    results = {}
    for name, fn in variants.items():
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ours = fn()
            times.append(time.perf_counter() - t0)
        results[name] = (ours, *match(meta["BS"].to_numpy(dtype=float), ours["start"].to_numpy() / fs),
                         dur / statistics.median(times))
    print(f"## PB-840 `0149_…` ({dur / 60:.1f} min at {fs:.0f} Hz) vs ventMAP breath_meta\n")
    print("| ours | breaths: ventMAP | ours | matched (±0.30 s) | matched % of ventMAP | ours unmatched "
          "| × real time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (ours, ri, oi, speed) in results.items():
        print(f"| {name} | {len(meta)} | {len(ours)} | {len(ri)} | {100 * len(ri) / len(meta):.1f} % "
              f"| {len(ours) - len(ri)} | {speed:,.0f}× |")
    print("\n| metric (matched breaths) | ventMAP median | " + " | ".join(
        f"{n}: median | {n}: median abs diff (% of ventMAP)" for n in results) + " |")
    print("|---|---:|" + "---:|---:|" * len(results))
    for label, ours_col, ref_col in METRICS:
        cells = []
        ref_all = meta[ref_col].to_numpy(dtype=float)
        for ours, ri, oi, _ in results.values():
            if ours_col not in ours:
                cells.append("— | — (needs flow)")
                continue
            r, o = ref_all[ri], ours[ours_col].to_numpy(dtype=float)[oi]
            ok = np.isfinite(r) & np.isfinite(o)
            mad = float(np.median(np.abs(o[ok] - r[ok])))
            cells.append(f"{np.median(o[ok]):.2f} | {mad:.3f} ({100 * mad / abs(np.median(r[ok])):.1f} %)")
        print(f"| {label} | {np.median(ref_all):.2f} | " + " | ".join(cells) + " |")


def match(ref_t: np.ndarray, our_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one nearest matching of breath start times inside ±TOL_S (greedy in time order)."""
    used = np.zeros(len(our_t), dtype=bool)
    pairs = []
    for i, t in enumerate(ref_t):
        j = int(np.searchsorted(our_t, t - TOL_S))
        best = None
        while j < len(our_t) and our_t[j] <= t + TOL_S:
            if not used[j] and (best is None or abs(our_t[j] - t) < abs(our_t[best] - t)):
                best = j
            j += 1
        if best is not None:
            used[best] = True
            pairs.append((i, best))
    return np.array([p[0] for p in pairs], dtype=int), np.array([p[1] for p in pairs], dtype=int)

if __name__ == "__main__":
    main()
