"""`twin-pipeline similar PERSON_ID -k 50 [--same-site] [--filter KEY=V1,V2 ...]`: patients like me.

Reads the current twins (or one past version) from the warehouse read-only, builds the similarity
index, prints the nearest twins with their distance and a summary of their therapies and 90-day
outcomes in which no group smaller than the sites' small-cell threshold is shown.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_filters(items: list[str] | None) -> dict[str, list[str]]:
    """["age_band=50-54,55-59", "sex=F"] -> {"age_band": ["50-54", "55-59"], "sex": ["F"]}."""
    from twin_pipeline.lib.similarity import FILTER_KEYS

    out: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise ValueError(f"--filter expects KEY=VALUE[,VALUE...], got {item!r}")
        if key not in FILTER_KEYS:
            raise ValueError(f"unknown filter {key!r}; known: {', '.join(FILTER_KEYS)}")
        out.setdefault(key, []).extend(v.strip() for v in values.split(",") if v.strip())
    return out


def cmd_similar(args: argparse.Namespace) -> int:
    import duckdb

    from twin_pipeline.lib.similarity import build_index, small_cell_threshold, summarize_neighbours
    from twin_pipeline.lib.twin import twins_as_of

    try:
        filters = parse_filters(args.filter)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    warehouse = args.warehouse or os.environ.get("TWIN_WAREHOUSE")
    if not warehouse or not os.path.exists(warehouse):
        print(f"error: warehouse {warehouse!r} not found (set TWIN_WAREHOUSE or --warehouse)", file=sys.stderr)
        return 2
    with duckdb.connect(warehouse, read_only=True) as conn:
        try:
            if args.version:
                twins = twins_as_of(conn, args.version)
            else:
                twins = conn.execute("select * from twin.patient_twin").df()
        except (duckdb.CatalogException, LookupError) as exc:
            print(f"error: no twins to search ({exc.__class__.__name__}); materialize twin/patient_twin first",
                  file=sys.stderr)
            return 2
    if args.min_completeness is not None:
        keep = (twins["completeness"] >= args.min_completeness) | (twins["person_id"] == args.person_id)
        twins = twins[keep].reset_index(drop=True)
    index = build_index(twins)
    try:
        nb = index.query(args.person_id, k=args.k, same_site=args.same_site, filters=filters)
    except KeyError:
        print("error: that person_id is not among the twins searched", file=sys.stderr)
        return 1
    sites_dir = args.sites_dir or os.environ.get("TWIN_SITES_DIR")
    threshold = small_cell_threshold(sites_dir, nb["site_id"]) if len(nb) else 5
    summary = summarize_neighbours(nb, twins, threshold=threshold)
    if args.format == "csv":
        if not args.summary_only:
            print(nb.to_csv(index=False), end="")
            print()
        print(summary.to_csv(index=False), end="")
        return 0
    print(f"{len(nb)} nearest twins (k={args.k}{', same site' if args.same_site else ''}"
          f"{', filters ' + str(filters) if filters else ''}; {index.method} search over {len(index)} twins)")
    if not args.summary_only:
        print(nb.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\ntherapies and 90-day six-minute-walk outcomes of the neighbours (groups < {threshold} suppressed)")
    print(summary.to_string(index=False, na_rep="-"))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("similar", help="patients like me: nearest twins and their therapies/outcomes")
    p.add_argument("person_id", help="pseudonymous person_id of the query twin")
    p.add_argument("-k", type=int, default=50, help="number of neighbours (default 50)")
    p.add_argument("--same-site", action="store_true", help="only twins of the query twin's site")
    p.add_argument("--filter", action="append", metavar="KEY=V1[,V2]",
                   help="restrict neighbours: site_id, age_band (e.g. 50-54,55-59) or sex (M/F); repeatable")
    p.add_argument("--version", default=None, help="search a past twin version (twin.patient_twin_history)")
    p.add_argument("--min-completeness", type=float, default=None, help="only twins at least this complete (0-1)")
    p.add_argument("--summary-only", action="store_true", help="print only the suppressed summary")
    p.add_argument("--format", choices=["table", "csv"], default="table")
    p.add_argument("--warehouse", default=None, help="DuckDB file (default $TWIN_WAREHOUSE)")
    p.add_argument("--sites-dir", default=None, help="site YAMLs for small-cell thresholds (default $TWIN_SITES_DIR)")
    p.set_defaults(func=cmd_similar)
