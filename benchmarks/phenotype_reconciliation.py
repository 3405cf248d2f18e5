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
from twin_pipeline.lib import deid_tables
from twin_pipeline.lib import harmonize as hz
from twin_pipeline.lib.harmonize import default_vocab_dir
from twin_pipeline.lib.interviews import ANSWER_FIELDS, interview_scores
from twin_pipeline.lib.phenotype import reconcile_phenotypes
from twin_pipeline.lib.twin import TwinInputs, build_twins
from twin_pipeline.sources.landing import Quarantine, find_deliveries, load_site_config
from twin_pipeline.sources.redcap import read_interviews
from twin_pipeline.sources.synthea_csv import EHR_TABLES, read_ehr
from twin_pipeline.synth.generator import generate_cohort

SECRET = "benchmark-secret-0123456789abcdef"
CONDITIONS = {  # truth column -> twin condition group
    "ra": "rheumatoid_arthritis", "oa": "osteoarthritis", "t1d": "type1_diabetes", "t2d": "type2_diabetes",
    "asthma": "asthma", "copd": "copd",
}


def twins_from_landing(landing: Path, sites_dir: Path, key: deid_lib.DeidKey, scratch: Path) -> pd.DataFrame:
    """The twin frame the `twin.patient_twin` asset would build (without waveform features)."""
    vocab = hz.load_vocabulary()
    restricted = deid_lib.load_restricted_zip3(default_vocab_dir() / "restricted_zip3.csv")
    acc: dict[str, list[pd.DataFrame]] = {k: [] for k in ("person", "visit", "condition", "measurement", "drug",
                                                          "procedure", "interview")}
    for d in find_deliveries(landing):
        site = load_site_config(sites_dir, d.site_id)
        q = Quarantine(scratch, d.site_id, d.delivery_id)
        load = read_ehr(d.path, site, d.delivery_id, q)
        t = deid_tables.deidentify_ehr({x: load.tables[x].frame for x in EHR_TABLES}, key=key, site_id=d.site_id,
                                       delivery_id=d.delivery_id, restricted_zip3=restricted)
        iv = read_interviews(d.path, site, d.delivery_id, q)
        iv_df = deid_tables.deidentify_interviews(iv.frame, iv.fields, key=key, site_id=d.site_id,
                                                  delivery_id=d.delivery_id,
                                                  known=deid_tables.known_identifiers(load.tables["patients"].frame))
        meas, _, _ = hz.harmonize_measurements(t["observation"], vocab, local_lab_codes=site.local_lab_codes,
                                               unit_alias=site.unit_alias)
        acc["person"].append(hz.harmonize_person(t["person"]))
        acc["visit"].append(hz.harmonize_visits(t["visit"]))
        acc["condition"].append(hz.harmonize_conditions(t["condition"], vocab))
        acc["measurement"].append(meas)
        acc["drug"].append(hz.harmonize_drugs(t["medication"], vocab))
        acc["procedure"].append(hz.harmonize_procedures(t["procedure"], vocab))
        acc["interview"].append(interview_scores(iv_df))
    f = {k: pd.concat(v, ignore_index=True) for k, v in acc.items()}
    inputs = TwinInputs(person=f["person"], condition=f["condition"], measurement=f["measurement"], drug=f["drug"],
                        procedure=f["procedure"], interview=f["interview"], waveforms={}, visit=f["visit"])
    return build_twins(inputs, twin_version="benchmark", built_at=pd.Timestamp("2026-12-01"))


def truth_by_pseudonym(truth_dir: Path, key: deid_lib.DeidKey) -> pd.DataFrame:
    frames = []
    for p in sorted(truth_dir.glob("*/patients.csv")):
        t = pd.read_csv(p, dtype={"patient_id": str})
        t["person_id"] = [deid_lib.pseudonym(key, s, pid) for s, pid in zip(t["site_id"], t["patient_id"])]
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


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
