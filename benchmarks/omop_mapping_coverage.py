"""Mapping coverage per site and vocabulary, and the DQD-style checks per delivery, on a generated
cohort and on the real Synthea sample (CSV and FHIR).

    .venv/bin/python benchmarks/omop_mapping_coverage.py [--work /tmp/omop_cov] [--patients 200]

Runs the same library path as the `omop` assets (read → de-identify → harmonize → checks) in memory;
prints aggregate tables only (rates and counts, no rows). No reference tool is run side by side: the
OHDSI Data Quality Dashboard needs an OMOP CDM database with the full vocabulary, which is not here.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from twin_pipeline.lib import deid, deid_tables, dqd
from twin_pipeline.lib import harmonize as hz
from twin_pipeline.sources.landing import Quarantine, SiteConfig, find_deliveries, load_site_config
from twin_pipeline.sources.synthea_csv import EHR_TABLES, read_ehr

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FOURCE = SHARED / "federated" / "4ce" / "lab.range.converted.csv"
SECRET = "benchmark-secret-0123456789"


def run_delivery(ddir: Path, site: SiteConfig, delivery_id: str, work: Path, vocab, ranges):
    q = Quarantine(work / "quarantine", site.site_id, delivery_id)
    load = read_ehr(ddir, site, delivery_id, q)
    frames = deid_tables.deidentify_ehr({t: load.tables[t].frame for t in EHR_TABLES},
                                        key=deid.DeidKey.from_secret(SECRET), site_id=site.site_id,
                                        delivery_id=delivery_id, restricted_zip3=set())
    h = hz.harmonize_ehr(frames, vocab, local_lab_codes=site.local_lab_codes, unit_alias=site.unit_alias)
    return h, dqd.run_checks(h.tables, vocab, fource_ranges=ranges)


def row(label: str, h: hz.HarmonizedDelivery, results) -> str:
    c = h.counts()
    cov = h.coverage()
    failed = [r.check.name for r in results if not r.passed]
    cells = [f"{cov[k]:.1%} of {c[k]['rows']}" for k in ("conditions_snomed", "labs_loinc", "drugs_rxnorm")]
    return (f"| {label} | {' | '.join(cells)} | {len(h.rejected)} | {len(results)} "
            f"({sum(r.passed for r in results)} pass) | {', '.join(failed) or '-'} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/omop_cov"))
    ap.add_argument("--patients", type=int, default=200)
    args = ap.parse_args()
    vocab = hz.load_vocabulary()
    ranges = dqd.load_fource_ranges(FOURCE) if FOURCE.exists() else None
    landing = args.work / "landing"
    if not landing.exists():
        from twin_pipeline.synth.generator import generate_cohort

        generate_cohort(landing, sites=3, patients=args.patients, seed=7, truth_dir=args.work / "truth",
                        sites_dir=args.work / "sites", deliveries=2,
                        waveform_seconds={"ecg_monitor": 10, "ventilator": 10, "wearable": 10})
    print("| delivery | conditions SNOMED→ICD-10-CM | labs/vitals → LOINC | drugs RxNorm → ingredient "
          "| quarantined (unit) | DQD checks | failed (warn unless person_fk/canonical_unit) |")
    print("|---|---|---|---|---|---|---|")
    timings = []
    for d in find_deliveries(landing):
        site = load_site_config(args.work / "sites", d.site_id)
        t0 = time.perf_counter()
        h, res = run_delivery(d.path, site, d.delivery_id, args.work, vocab, ranges)
        timings.append(time.perf_counter() - t0)
        print(row(f"{d.site_id}/{d.delivery_id}", h, res))
    csv_dir, fhir_dir = SHARED / "ehr" / "synthea_59" / "csv", SHARED / "ehr" / "synthea_59" / "fhir"
    for label, files in (("Synthea 59 CSV", {f"{t}.csv": csv_dir / f"{t}.csv" for t in EHR_TABLES}),
                         ("Synthea FHIR Bundle (1 patient)", {p.name: p for p in fhir_dir.glob("*.json")})):
        ddir = args.work / label.split()[1].lower() / "ehr"
        ddir.mkdir(parents=True, exist_ok=True)
        for name, src in files.items():
            if not (ddir / name).exists():
                os.symlink(src, ddir / name)
        h, res = run_delivery(ddir.parent, SiteConfig("synthea"), "2022-03-04", args.work, vocab, ranges)
        print(row(label, h, res))
        if label.startswith("Synthea 59"):
            synthea = (h, res)
    print(f"\nper generated delivery: read+deid+harmonize+checks median {sorted(timings)[len(timings) // 2]:.2f} s")
    h, res = synthea
    print("\nDQD results on the Synthea CSV sample (rows violating / checked, breakdown):")
    for r in res:
        print(f"  {r.check.category:13s} {r.check.name:22s} {'PASS' if r.passed else 'FAIL'} "
              f"{r.rows_violated}/{r.rows_checked} {r.breakdown or ''} {r.note}")


if __name__ == "__main__":
    main()
