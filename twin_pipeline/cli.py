"""The `twin-pipeline` command.

    twin-pipeline generate --sites 3 --patients 200 --seed 7 --out data/landing
    twin-pipeline backfill [--site S] [--delivery D] [--no-twins]
    twin-pipeline demo
    twin-pipeline summary
    (more sub-commands come from twin_pipeline/commands/*.py)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_env(path: Path | None = None) -> None:
    """Load `.env` (or `.env.example` when there is no `.env`) without overriding set variables."""
    from dotenv import load_dotenv

    # set variables win; then .env; then .env.example supplies defaults for anything still missing
    for candidate in ([path] if path else [Path.cwd() / ".env", REPO_ROOT / ".env", REPO_ROOT / ".env.example"]):
        if candidate and candidate.exists():
            load_dotenv(candidate, override=False)
    if "DAGSTER_HOME" not in os.environ:
        home = REPO_ROOT / ".dagster_home"
        os.environ["DAGSTER_HOME"] = str(home)
    ensure_dagster_home(Path(os.environ["DAGSTER_HOME"]))


def ensure_dagster_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists() and (REPO_ROOT / "dagster.yaml").exists():
        target.write_text((REPO_ROOT / "dagster.yaml").read_text())


def cmd_generate(args: argparse.Namespace) -> int:
    from twin_pipeline.synth.generator import generate_cohort

    t0 = time.perf_counter()
    summary = generate_cohort(
        Path(args.out),
        sites=args.sites,
        patients=args.patients,
        seed=args.seed,
        truth_dir=Path(args.truth_dir),
        sites_dir=Path(args.sites_dir),
        deliveries=args.deliveries,
    )
    print(json.dumps(summary, indent=2, default=str))
    print(f"generated in {time.perf_counter() - t0:.1f} s → {args.out}", file=sys.stderr)
    return 0


def run_backfill(site: str | None = None, delivery: str | None = None, twins: bool = True, echo=print) -> dict:
    """Register every complete delivery as a partition and materialize it in-process, then the twins.

    Runs are recorded in the Dagster instance at $DAGSTER_HOME, so the UI shows them afterwards.
    """
    import dagster as dg

    from twin_pipeline.defs.build import build_definitions
    from twin_pipeline.defs.partitions import delivery_partitions, partition_key_for, site_partitions
    from twin_pipeline.sources.landing import find_deliveries

    instance = dg.DagsterInstance.get()
    defs = build_definitions()
    deliveries = [
        d for d in find_deliveries(Path(os.environ["TWIN_LANDING_DIR"]))
        if (site is None or d.site_id == site) and (delivery is None or d.delivery_id == delivery)
    ]
    if not deliveries:
        raise SystemExit(f"no complete deliveries under {os.environ['TWIN_LANDING_DIR']} (need <site>/<date>/_READY)")
    sites = sorted({d.site_id for d in deliveries})
    dates = sorted({d.delivery_id for d in deliveries})
    known_s = set(instance.get_dynamic_partitions(site_partitions.name))
    known_d = set(instance.get_dynamic_partitions(delivery_partitions.name))
    instance.add_dynamic_partitions(site_partitions.name, [s for s in sites if s not in known_s])
    instance.add_dynamic_partitions(delivery_partitions.name, [d for d in dates if d not in known_d])
    job = defs.resolve_job_def("site_delivery_job")
    results = {}
    for d in deliveries:
        t0 = time.perf_counter()
        res = job.execute_in_process(
            partition_key=partition_key_for(d.site_id, d.delivery_id), instance=instance, raise_on_error=False
        )
        status = "ok" if res.success else "FAILED"
        results[f"{d.site_id}/{d.delivery_id}"] = res.success
        echo(f"  {d.site_id}/{d.delivery_id}: {status} in {time.perf_counter() - t0:.1f} s (run {res.run_id[:8]})")
    if twins:
        fed_job = defs.resolve_job_def("federated_site_job")
        for s in sites:
            t0 = time.perf_counter()
            res = fed_job.execute_in_process(partition_key=s, instance=instance, raise_on_error=False)
            results[f"federated/{s}"] = res.success
            echo(f"  {s} shareable files: {'ok' if res.success else 'FAILED'} in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        res = defs.resolve_job_def("twin_refresh_job").execute_in_process(instance=instance, raise_on_error=False)
        results["twin_refresh"] = res.success
        echo(f"  twins + models + pooled files: {'ok' if res.success else 'FAILED'} in {time.perf_counter() - t0:.1f} s "
             f"(run {res.run_id[:8]})")
        if res.success:
            t0 = time.perf_counter()
            eff_job = defs.resolve_job_def("federated_effects_job")
            ok = all(eff_job.execute_in_process(partition_key=s, instance=instance, raise_on_error=False).success
                     for s in sites)
            res = defs.resolve_job_def("federated_pool_job").execute_in_process(instance=instance, raise_on_error=False)
            results["federated_effects"] = ok and res.success
            echo(f"  federated effect estimates + pooling: {'ok' if ok and res.success else 'FAILED'} in "
                 f"{time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()  # homomorphic pooling of the unobfuscated AgeSex counts (Paillier)
            he_job = defs.resolve_job_def("federated_he_site_job")
            ok = all(he_job.execute_in_process(partition_key=s, instance=instance, raise_on_error=False).success
                     for s in sites)
            res = defs.resolve_job_def("federated_he_pool_job").execute_in_process(instance=instance,
                                                                                   raise_on_error=False)
            results["federated_homomorphic"] = ok and res.success
            echo(f"  homomorphic AgeSex pooling: {'ok' if ok and res.success else 'FAILED'} in "
                 f"{time.perf_counter() - t0:.1f} s")
    return results


def cmd_backfill(args: argparse.Namespace) -> int:
    results = run_backfill(args.site, args.delivery, twins=not args.no_twins)
    return 0 if all(results.values()) else 1


def summary_table(warehouse: str) -> str:
    import duckdb

    con = duckdb.connect(warehouse, read_only=True)
    try:
        rows = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('deid','omop','features','twin','ml','federated','privacy') order by 1, 2"
        ).fetchall()
        lines = [f"{'table':<38}{'rows':>10}{'patients':>10}{'sites':>7}"]
        for schema, table in rows:
            cols = {r[0] for r in con.execute(
                "select column_name from information_schema.columns where table_schema=? and table_name=?",
                [schema, table]).fetchall()}
            n = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
            p = con.execute(f'select count(distinct person_id) from "{schema}"."{table}"').fetchone()[0] \
                if "person_id" in cols else ""
            s = con.execute(f'select count(distinct site_id) from "{schema}"."{table}"').fetchone()[0] \
                if "site_id" in cols else ""
            lines.append(f"{schema + '.' + table:<38}{n:>10}{p!s:>10}{s!s:>7}")
        return "\n".join(lines)
    finally:
        con.close()


def cmd_summary(args: argparse.Namespace) -> int:
    print(summary_table(os.environ["TWIN_WAREHOUSE"]))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    landing = Path(os.environ["TWIN_LANDING_DIR"])
    from twin_pipeline.sources.landing import find_deliveries

    if not find_deliveries(landing):
        print(f"[1/3] generating the demo cohort ({args.sites} sites × ~{args.patients} patients, seed {args.seed})")
        from twin_pipeline.synth.generator import generate_cohort

        generate_cohort(
            landing, sites=args.sites, patients=args.patients, seed=args.seed,
            truth_dir=Path(os.environ["TWIN_GROUND_TRUTH_DIR"]), sites_dir=Path(os.environ["TWIN_SITES_DIR"]),
        )
    else:
        print(f"[1/3] landing area already has deliveries: {landing}")
    print("[2/3] materializing every site × delivery partition, then twins and models")
    Path(os.environ["TWIN_WAREHOUSE"]).parent.mkdir(parents=True, exist_ok=True)
    results = run_backfill()
    print("[3/3] what was built")
    print(summary_table(os.environ["TWIN_WAREHOUSE"]))
    ok = all(results.values())
    print(
        f"\n{'done' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s\n"
        f"  warehouse:  {os.environ['TWIN_WAREHOUSE']}\n"
        f"  Dagster UI: make ui   (http://127.0.0.1:3000; runs are in DAGSTER_HOME={os.environ['DAGSTER_HOME']})\n"
        f"  MLflow UI:  make mlflow-ui   (http://127.0.0.1:5000; store {os.environ['MLFLOW_TRACKING_URI']})"
    )
    return 0 if ok else 1


def register_plugins(sub) -> None:
    """Add the sub-commands defined in `twin_pipeline/commands/*.py` (each has `register(sub)`)."""
    import importlib
    import pkgutil

    import twin_pipeline.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="twin-pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a synthetic multi-site cohort in the landing contract")
    g.add_argument("--sites", type=int, default=3)
    g.add_argument("--patients", type=int, default=200, help="average patients per site")
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--deliveries", type=int, default=2)
    g.add_argument("--out", default=None, help="landing root (default $TWIN_LANDING_DIR)")
    g.add_argument("--truth-dir", default=None, help="ground truth root (default $TWIN_GROUND_TRUTH_DIR)")
    g.add_argument("--sites-dir", default=None, help="site YAML folder (default $TWIN_SITES_DIR)")
    g.set_defaults(func=cmd_generate)

    b = sub.add_parser("backfill", help="materialize every complete delivery (or one site/delivery), then twins")
    b.add_argument("--site")
    b.add_argument("--delivery")
    b.add_argument("--no-twins", action="store_true", help="skip the twin + model refresh")
    b.set_defaults(func=cmd_backfill)

    d = sub.add_parser("demo", help="generate the demo cohort if needed and materialize everything")
    d.add_argument("--sites", type=int, default=3)
    d.add_argument("--patients", type=int, default=200)
    d.add_argument("--seed", type=int, default=7)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("summary", help="print row/patient counts of every warehouse table")
    s.set_defaults(func=cmd_summary)

    register_plugins(sub)

    args = parser.parse_args(argv)
    load_env()
    if args.command == "generate":
        args.out = args.out or os.environ["TWIN_LANDING_DIR"]
        args.truth_dir = args.truth_dir or os.environ["TWIN_GROUND_TRUTH_DIR"]
        args.sites_dir = args.sites_dir or os.environ["TWIN_SITES_DIR"]
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
