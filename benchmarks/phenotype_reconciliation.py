"""Phenotype reconciliation vs the raw diagnosis code, against the generator's ground truth.

Generates cohorts with `twin_pipeline.synth` (short waveforms; waveforms do not feed phenotypes),
runs the pipeline's own library code on them without Dagster (landing readers -> de-identification
-> harmonization -> interview scores -> `build_twins` -> `reconcile_phenotypes`), maps the truth's
local ids to pseudonyms with the same key, and prints accuracy / F1 per condition and per site for
the raw code (`dx_<condition> > 0`) and the reconciled call (`p_<condition> >= 0.5`).

The knowledge weights in `lib/phenotype.py` were checked on the `--tune-seed` cohort only; the
reported cohorts use other seeds. Run:

    .venv/bin/python benchmarks/phenotype_reconciliation.py            # demo (3 x 200, seed 7) + 10,000 (seed 2026)
    .venv/bin/python benchmarks/phenotype_reconciliation.py --tune     # the tuning cohort (seed 101) only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from twin_pipeline.lib import deid as deid_lib
from twin_pipeline.lib.phenotype import reconcile_phenotypes
from twin_pipeline.lib.local_pipeline import truth_by_pseudonym, twin_inputs_from_landing
from twin_pipeline.lib.twin import build_twins
from twin_pipeline.synth.generator import generate_cohort

SECRET = "benchmark-secret-0123456789abcdef"
CONDITIONS = {  # truth column -> twin condition group
    "ra": "rheumatoid_arthritis", "oa": "osteoarthritis", "t1d": "type1_diabetes", "t2d": "type2_diabetes",
    "asthma": "asthma", "copd": "copd",
}


def twins_from_landing(landing: Path, sites_dir: Path, key: deid_lib.DeidKey, scratch: Path) -> pd.DataFrame:
    """The twin frame the `twin.patient_twin` asset would build (without waveform features)."""
    inputs = twin_inputs_from_landing(landing, sites_dir, key, scratch)
    return build_twins(inputs, twin_version="benchmark", built_at=pd.Timestamp("2026-12-01"))


def _f1(pred: pd.Series, true: pd.Series) -> tuple[float, float, int]:
    tp = int((pred & true).sum())
    fp = int((pred & ~true).sum())
    fn = int((~pred & true).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    return float((pred == true).mean()), f1, int(true.sum())


def score(twins: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    ph = reconcile_phenotypes(twins)
    df = pd.concat([twins[["site_id", "person_id"] + [f"dx_{g}" for g in CONDITIONS.values()]], ph], axis=1)
    df = df.merge(truth, on=["site_id", "person_id"], how="inner")
    rows = []
    for site, g in [("all", df)] + list(df.groupby("site_id")):
        for short, group in CONDITIONS.items():
            true = g[f"true_{short}"].astype(bool)
            acc_r, f1_r, n = _f1(g[f"dx_{group}"] > 0, true)
            acc_c, f1_c, _ = _f1(g[f"ph_{group}"].astype(bool), true)
            rows.append({"site": site, "condition": group, "n_true": n, "raw_acc": acc_r, "raw_f1": f1_r,
                         "reconciled_acc": acc_c, "reconciled_f1": f1_c})
    return pd.DataFrame(rows)


def run(name: str, folder: str, sites: int, patients: int, seed: int, work: Path) -> pd.DataFrame:
    root = work / folder
    t0 = time.perf_counter()
    if not (root / "landing").exists():
        generate_cohort(root / "landing", sites=sites, patients=patients, seed=seed, truth_dir=root / "truth",
                        sites_dir=root / "sites", deliveries=2,
                        waveform_seconds={"ecg_monitor": 2, "ventilator": 2, "wearable": 2})
    t1 = time.perf_counter()
    key = deid_lib.DeidKey.from_secret(SECRET, max_shift_days=120)
    twins = twins_from_landing(root / "landing", root / "sites", key, root / "quarantine")
    t2 = time.perf_counter()
    ph_t = time.perf_counter()
    res = score(twins, truth_by_pseudonym(root / "truth", key))
    t3 = time.perf_counter()
    print(f"\n## {name}: {len(twins)} twins, {sites} sites, seed {seed} "
          f"(generate {t1 - t0:.0f} s, pipeline {t2 - t1:.0f} s, reconcile+score {t3 - ph_t:.1f} s)\n")
    print(_markdown(res))
    return res


def _markdown(res: pd.DataFrame) -> str:
    lines = ["| site | condition | true cases | raw code acc | raw code F1 | reconciled acc | reconciled F1 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in res.itertuples():
        lines.append(f"| {r.site} | {r.condition} | {r.n_true} | {r.raw_acc:.3f} | {r.raw_f1:.3f} | "
                     f"{r.reconciled_acc:.3f} | {r.reconciled_f1:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None, help="folder for generated cohorts (default: a temp dir)")
    ap.add_argument("--tune", action="store_true", help="only the tuning cohort (seed --tune-seed)")
    ap.add_argument("--tune-seed", type=int, default=101)
    ap.add_argument("--seed", type=int, default=7, help="demo-size cohort seed (the demo's)")
    ap.add_argument("--big-seed", type=int, default=2026)
    ap.add_argument("--big-patients", type=int, default=10_000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="phenotype_bench_") as tmp:
        work = Path(args.work or tmp)
        if args.tune:
            run("tuning cohort", "tune", 3, 200, args.tune_seed, work)
            return 0
        run("demo-size cohort", "demo", 3, 200, args.seed, work)
        run(f"{args.big_patients:,}-patient cohort", "big", 3, args.big_patients // 3, args.big_seed, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
