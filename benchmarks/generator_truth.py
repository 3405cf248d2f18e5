"""Waveform features recovered from generated records vs the generator's ground truth.

Generates a cohort into a temporary folder (`generate_cohort`, the code behind `twin-pipeline
generate`), runs `record_features` on every WFDB record of its landing deliveries and compares with
`<truth>/<site>/waveforms.csv`. Stated tolerances (absolute unless marked %): ECG heart rate ±2 bpm;
ventilator RR ±1 /min, inspired tidal volume ±5 %, PEEP ±1 cmH2O, dynamic compliance ±15 % (the
generator's compliance is static: dynamic compliance also carries the resistive pressure, so it
is expected to miss), least-squares compliance ±10 %, least-squares resistance ±15 %;
wearable resting HR ±5 bpm. Records with a planted invalid run or flat segment are included (they
must still be recovered from the rest of the record) and counted separately.

    .venv/bin/python benchmarks/generator_truth.py [--sites 2] [--patients 60] [--seed 11]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from twin_pipeline.lib.waveform import record_features
from twin_pipeline.synth.generator import generate_cohort

CHECKS = [  # (device kind, truth column, feature, tolerance, relative?)
    ("ecg_monitor", "true_hr_bpm", "hr_mean_bpm", 2.0, False),
    ("ventilator", "true_rr_bpm", "resp_rate_bpm", 1.0, False),
    ("ventilator", "true_tidal_volume_ml", "tidal_volume_insp_ml", 0.05, True),
    ("ventilator", "true_peep_cmh2o", "peep_cmh2o", 1.0, False),
    ("ventilator", "true_compliance_ml_cmh2o", "dynamic_compliance_ml_cmh2o", 0.15, True),
    ("ventilator", "true_compliance_ml_cmh2o", "compliance_lsf_ml_cmh2o", 0.10, True),
    ("ventilator", "true_resistance_cmh2o_l_s", "resistance_lsf_cmh2o_l_s", 0.15, True),
    ("wearable", "true_resting_hr_bpm", "resting_hr_bpm", 5.0, False),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--patients", type=int, default=60)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gen_truth_") as tmp:
        root = Path(tmp)
        generate_cohort(root / "landing", sites=args.sites, patients=args.patients, seed=args.seed,
                        truth_dir=root / "truth", sites_dir=root / "sites", deliveries=1)
        truth = pd.concat([pd.read_csv(p).assign(site=p.parent.name)
                           for p in sorted((root / "truth").glob("*/waveforms.csv"))], ignore_index=True)
        rows, t0, signal_s = [], time.perf_counter(), 0.0
        for rec in truth.itertuples(index=False):
            hea = next((root / "landing" / rec.site).glob(f"*/waveforms/{rec.record}.hea"))
            feats = record_features(hea.with_suffix(""), rec.device_kind)
            signal_s += feats["duration_s"]
            rows.append({"record": rec.record, **feats})
        wall = time.perf_counter() - t0
    got = truth.merge(pd.DataFrame(rows), on="record", suffixes=("", "_feat"))
    faulty = (got["has_invalid_run"] == 1) | (got["has_flat_segment"] == 1)
    print(f"## Generator ground truth ({args.sites} sites × ~{args.patients} patients, seed {args.seed}): "
          f"{len(got)} records, {signal_s / 3600:.1f} h of signal in {wall:.1f} s\n")
    print("| feature | records | with planted fault | median abs error | 95th pct abs error | tolerance "
          "| within tolerance | flagged not ok |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, tcol, fcol, tol, rel in CHECKS:
        sub = got[(got["device_kind"] == kind) & got[tcol].notna()]
        err = (sub[fcol] - sub[tcol]).abs()
        if rel:
            err = err / sub[tcol].abs()
        ok = err <= tol
        unit = "%" if rel else ""
        scale = 100.0 if rel else 1.0
        fin = err.dropna()
        med = f"{scale * fin.median():.2f}{unit}" if len(fin) else "—"
        p95 = f"{scale * np.percentile(fin, 95):.2f}{unit}" if len(fin) else "—"
        print(f"| {kind}: {fcol} | {len(sub)} | {int(faulty[sub.index].sum())} | {med} | {p95} "
              f"| ±{scale * tol:g}{unit} | {ok.sum()}/{len(sub)} ({100 * ok.mean():.0f} %) "
              f"| {int((sub['quality_flag'] != 'ok').sum())} |")


if __name__ == "__main__":
    main()
