"""`twin-pipeline simulate PERSON_ID`: one twin's simulated therapies beside its "patients like me".

For the twin, every therapy's simulated 90-day six-minute walk distance (mean, p10, p90 and the
probability that it is the best therapy, from `ml.treatment_simulation`) is printed side by side with the
observed 90-day outcomes of its nearest neighbours (`twin_pipeline.lib.similarity`, k nearest twins over
the whole cohort) who actually received that therapy. A neighbour group smaller than the small-cell
threshold of the sites involved (5 when no site sets one) is shown as ``<threshold`` with no figures; when
exactly one group is suppressed, the next smallest is suppressed too so it cannot be recovered from the
total. Reads the warehouse read-only; never prints another patient's identifier.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

from twin_pipeline.lib.effects import ARMS, OUTCOME_COL, TREATMENT_COL

DEFAULT_K = 50


def neighbour_outcomes(neighbours: pd.DataFrame, twins: pd.DataFrame, *, threshold: int) -> pd.DataFrame:
    """Per therapy: observed 90-day outcomes (n, mean, p10, p90) of the neighbours who received it.

    Only neighbours with an observed outcome count. Groups below ``threshold`` (and, when exactly one is
    below, the next smallest) get ``n_like_me = "<threshold"`` and NaN figures. Indexed by therapy (``ARMS``).
    """
    if threshold < 1:
        raise ValueError("small-cell threshold must be >= 1")
    nb = neighbours[["person_id"]].merge(
        twins[["person_id", TREATMENT_COL, OUTCOME_COL]].drop_duplicates("person_id"), on="person_id", how="left")
    nb = nb[nb[TREATMENT_COL].notna() & nb[OUTCOME_COL].notna()]
    rows = {}
    for arm in ARMS:
        y = nb.loc[nb[TREATMENT_COL] == arm, OUTCOME_COL].to_numpy(float)
        rows[arm] = {"n": len(y), "like_me_mean": y.mean() if len(y) else np.nan,
                     "like_me_p10": np.quantile(y, 0.1) if len(y) else np.nan,
                     "like_me_p90": np.quantile(y, 0.9) if len(y) else np.nan}
    out = pd.DataFrame.from_dict(rows, orient="index")
    small = out["n"] < threshold
    if small.sum() == 1 and (~small).any():
        small[out.loc[~small, "n"].idxmin()] = True  # complementary suppression
    out["n_like_me"] = out["n"].astype(str)
    out.loc[small, "n_like_me"] = f"<{threshold}"
    out.loc[small, ["like_me_mean", "like_me_p10", "like_me_p90"]] = np.nan
    return out.drop(columns="n")


def therapy_table(person_id: str, twins: pd.DataFrame, sims: pd.DataFrame, *, k: int = DEFAULT_K,
                  threshold: int = 5) -> pd.DataFrame:
    """The side-by-side table for one twin: simulated (mean, p10, p90, P(best), recommended) and like-me."""
    from twin_pipeline.lib.similarity import build_index

    mine = sims[sims["person_id"] == person_id]
    if mine.empty:
        raise KeyError("no simulation for this person_id in ml.treatment_simulation")
    index = build_index(twins)
    neighbours = index.query(person_id, k=k)
    sim = mine.set_index("therapy").reindex(list(ARMS))
    table = pd.DataFrame({
        "sim_mean": sim["mean"], "sim_p10": sim["p10"], "sim_p90": sim["p90"], "p_best": sim["prob_best"],
        "recommended": sim["recommended"].fillna(False).astype(bool),
    })
    return table.join(neighbour_outcomes(neighbours, twins, threshold=threshold))


def format_table(person_id: str, table: pd.DataFrame, *, k: int, threshold: int) -> str:
    lines = [
        f"twin {person_id}: simulated 90-day six-minute walk distance (m) vs the observed outcomes of its "
        f"{k} nearest twins ('patients like me') who received each therapy (groups < {threshold} suppressed)",
        f"{'therapy':<17}{'mean':>7}{'p10':>7}{'p90':>7}{'P(best)':>9}  | {'n like me':>9}{'mean':>7}{'p10':>7}{'p90':>7}",
    ]

    def f(v: float) -> str:
        return "-" if pd.isna(v) else f"{v:.0f}"

    for arm, r in table.iterrows():
        mark = " *" if r["recommended"] else ""
        lines.append(
            f"{arm + mark:<17}{f(r['sim_mean']):>7}{f(r['sim_p10']):>7}{f(r['sim_p90']):>7}{r['p_best']:>9.2f}  | "
            f"{r['n_like_me']:>9}{f(r['like_me_mean']):>7}{f(r['like_me_p10']):>7}{f(r['like_me_p90']):>7}"
        )
    lines.append("* recommended (highest simulated mean)")
    return "\n".join(lines)


def cmd_simulate(args: argparse.Namespace) -> int:
    import duckdb

    from twin_pipeline.lib.similarity import DEFAULT_SMALL_CELL, small_cell_threshold

    warehouse = args.warehouse or os.environ["TWIN_WAREHOUSE"]
    con = duckdb.connect(warehouse, read_only=True)
    try:
        twins = con.execute("select * from twin.patient_twin").df()
        sims = con.execute("select * from ml.treatment_simulation where person_id = ?", [args.person_id]).df()
    finally:
        con.close()
    if "twin_version" in twins and twins["twin_version"].nunique() > 1:
        twins = twins[twins["twin_version"] == twins["twin_version"].max()]
    if sims.empty or args.person_id not in set(twins["person_id"]):
        print(f"no twin with simulations for person_id {args.person_id!r} in {warehouse}")
        return 1
    sites_dir = args.sites_dir or os.environ.get("TWIN_SITES_DIR")
    threshold = (small_cell_threshold(sites_dir, sorted(twins["site_id"].unique()), DEFAULT_SMALL_CELL)
                 if sites_dir else DEFAULT_SMALL_CELL)
    table = therapy_table(args.person_id, twins, sims, k=args.k, threshold=threshold)
    print(format_table(args.person_id, table, k=args.k, threshold=threshold))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="one twin's simulated therapies beside its 'patients like me'")
    p.add_argument("person_id", help="the twin's pseudonymous person_id")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="nearest twins to compare with")
    p.add_argument("--warehouse", default=None, help="DuckDB file (default $TWIN_WAREHOUSE)")
    p.add_argument("--sites-dir", default=None, help="site YAMLs with small-cell thresholds (default $TWIN_SITES_DIR)")
    p.set_defaults(func=cmd_simulate)
