"""`federated` layer: per-site 4CE-style shareable files (obfuscated) and coordinator pooling.

Per-site assets are partitioned by site and read only that site's de-identified `omop` tables; they
write the only things that may leave a site (CSV outbox + `federated.site_*` tables). Coordinator
assets read only those shareable tables, never a patient-level table (a test enforces it).
"""

from pathlib import Path

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

from twin_pipeline.defs.partitions import WAREHOUSE_POOL, site_partitions
from twin_pipeline.lib import federated as fed
from twin_pipeline.resources import LandingResource

LAB_LOINCS = ["1988-5", "2345-7", "2160-0", "4548-4", "59408-5", "64098-7"]
SITE_FILES = {  # asset name -> 4CE file name
    "site_age_sex": "AgeSex",
    "site_diag_proc_med": "DiagProcMed",
    "site_labs": "Labs",
    "site_daily_counts": "DailyCounts",
}
DESCRIPTIONS = {
    "site_age_sex": "One row per site × age group × sex (4CE AgeSex, obfuscated): patients, mean age, ever severe.",
    "site_diag_proc_med": "One row per site × concept (ICD-10 3-char, drug class, procedure): patients per window (4CE DiagProcMed, obfuscated).",
    "site_labs": "One row per site × LOINC × day since index: patients, mean/sd of value and log value (4CE Labs, obfuscated).",
    "site_daily_counts": "One row per site × calendar date: cumulative patients and deaths (4CE DailyCounts, obfuscated).",
}


class FederatedResource(dg.ConfigurableResource):
    """Where a site's shareable files are written before they leave the site."""

    outbox_dir: str = Field(description="Root of <outbox>/<site>/<4CE file>.csv (shareable, obfuscated).")


def _site_tables(warehouse: DuckDBResource, site_id: str) -> dict[str, pd.DataFrame]:
    tables = {
        "person": "person", "condition": "condition_occurrence", "measurement": "measurement",
        "drug": "drug_exposure", "procedure": "procedure_occurrence",
    }
    out = {}
    with warehouse.get_connection() as conn:
        for name, table in tables.items():
            exists = conn.execute(
                "select count(*) from information_schema.tables where table_schema='omop' and table_name=?", [table]
            ).fetchone()[0]
            if not exists:
                raise dg.Failure(f"omop.{table} does not exist yet: materialize the site's deliveries first")
            out[name] = conn.execute(f'select * from omop."{table}" where site_id = ?', [site_id]).df()
    return out


def _small_cell_check(name: str) -> dg.AssetCheckSpec:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            "no_small_cells", asset=["federated", name], blocking=True, partitions_def=site_partitions,
            description="No count in 1..threshold-1 is released unmasked (4CE obfuscation rule).",
        )


@dg.multi_asset(
    outs={
        f"federated__{name}": dg.AssetOut(
            key=["federated", name], group_name="federated", description=DESCRIPTIONS[name],
            kinds={"duckdb", "csv"}, metadata={"partition_expr": "siteid"},
        )
        for name in SITE_FILES
    },
    partitions_def=site_partitions,
    deps=[dg.AssetKey(["omop", t]) for t in
          ("person", "condition_occurrence", "measurement", "drug_exposure", "procedure_occurrence")],
    check_specs=[_small_cell_check(name) for name in SITE_FILES],
    pool=WAREHOUSE_POOL,
    can_subset=False,
)
def site_shareable_files(
    context: dg.AssetExecutionContext, warehouse: DuckDBResource, landing: LandingResource,
    federated: FederatedResource,
):
    """Build this site's 4CE-style files from its de-identified omop tables and obfuscate them with the
    site's small-cell threshold (site YAML); write them to the outbox and the warehouse."""
    site_id = context.partition_key
    threshold = int(landing.site_config(site_id).small_cell_threshold)
    t = _site_tables(warehouse, site_id)
    index = fed.cohort_index(t["condition"])
    raw = {
        "site_age_sex": fed.site_age_sex(site_id, t["person"], index, t["procedure"]),
        "site_diag_proc_med": fed.site_diag_proc_med(site_id, index, t["condition"], t["drug"], t["procedure"]),
        "site_labs": fed.site_labs(site_id, index, t["measurement"], t["procedure"], LAB_LOINCS),
        "site_daily_counts": fed.site_daily_counts(site_id, index, t["person"]),
    }
    outbox = Path(federated.outbox_dir) / site_id
    outbox.mkdir(parents=True, exist_ok=True)
    for name, file in SITE_FILES.items():
        shared = fed.obfuscate(raw[name], file, threshold)
        shared.to_csv(outbox / f"{file}.csv", index=False)
        masked = int(sum((shared[c] == fed.MASK).sum() for c in fed.COUNT_COLUMNS[file] if c in shared.columns))
        yield dg.Output(
            shared, output_name=f"federated__{name}",
            metadata={
                "dagster/row_count": len(shared), "rows_before_obfuscation": len(raw[name]),
                "masked_cells": masked, "threshold": threshold, "bytes_shared": (outbox / f"{file}.csv").stat().st_size,
            },
        )
        bad = fed.small_cells(shared, file, threshold)
        yield dg.AssetCheckResult(
            asset_key=dg.AssetKey(["federated", name]), check_name="no_small_cells", passed=bad == 0,
            metadata={"unmasked_small_cells": bad, "threshold": threshold},
        )


class SiteEffectConfig(dg.Config):
    seed: int = Field(default=7, description="Seed for the site's cross-fitted doubly-robust estimates.")
    n_folds: int = Field(default=3, description="Cross-fitting folds at the site.")


@dg.asset(
    key=["federated", "site_effect_estimates"],
    group_name="federated",
    kinds={"duckdb", "scikit-learn"},
    partitions_def=site_partitions,
    metadata={"partition_expr": "siteid"},
    deps=[dg.AssetKey(["twin", "patient_twin"])],
    check_specs=[_small_cell_check("site_effect_estimates")],
    pool=WAREHOUSE_POOL,
)
def site_effect_estimates(
    context: dg.AssetExecutionContext, config: SiteEffectConfig, warehouse: DuckDBResource, landing: LandingResource
):
    """One row per site × therapy: the site's doubly-robust (AIPW, cross-fitted) effect vs standard care
    with its standard error; arms with fewer patients than the site's threshold are not released."""
    from twin_pipeline.lib import effects
    from twin_pipeline.lib.twin import MODEL_FEATURES

    site_id = context.partition_key
    threshold = int(landing.site_config(site_id).small_cell_threshold)
    with warehouse.get_connection() as conn:
        twins = conn.execute("select * from twin.patient_twin where site_id = ?", [site_id]).df()
    train = twins[twins["therapy"].notna() & twins["outcome_6mwd_90d_m"].notna()]
    rows = []
    per_arm = train["therapy"].value_counts()
    enough = all(per_arm.get(a, 0) >= effects.MIN_ROWS_PER_ARM for a in effects.ARMS)
    if not enough:
        context.log.info(
            f"{site_id}: fewer than {effects.MIN_ROWS_PER_ARM} twins with an observed outcome in some arm; "
            "no effect estimates released for this site"
        )
    else:
        _, diag = effects.fit_t_learner(train, MODEL_FEATURES, seed=config.seed, n_folds=config.n_folds)
        for arm in effects.ARMS:
            if arm == effects.REFERENCE_ARM:
                continue
            n_arm = int((train["therapy"] == arm).sum())
            if n_arm < max(threshold, 1):
                continue
            rows.append({"siteid": site_id, "therapy": arm, "subgroup": "all", "n": n_arm,
                         "estimate": float(diag[f"dr_ate_{arm}"]), "se": float(diag[f"dr_ate_se_{arm}"])})
    out = pd.DataFrame(rows, columns=["siteid", "therapy", "subgroup", "n", "estimate", "se"])
    yield dg.Output(out, metadata={"dagster/row_count": len(out), "n_train": int(len(train)),
                                   "arms_released": int(len(out)), "threshold": threshold,
                                   "estimable": bool(enough)})
    bad = int(((out["n"] > 0) & (out["n"] < threshold)).sum()) if threshold > 1 else 0
    yield dg.AssetCheckResult(check_name="no_small_cells", passed=bad == 0, metadata={"unmasked_small_cells": bad})


@dg.asset(
    key=["federated", "pooled_effects"],
    group_name="federated",
    kinds={"duckdb", "scipy"},
    ins={"site_effects": dg.AssetIn(key=["federated", "site_effect_estimates"])},
    check_specs=[dg.AssetCheckSpec("pooled_effects_finite", asset=["federated", "pooled_effects"], blocking=True)],
    pool=WAREHOUSE_POOL,
)
def pooled_effects(context: dg.AssetExecutionContext, site_effects: pd.DataFrame):
    """One row per therapy × subgroup: inverse-variance fixed and DerSimonian–Laird random-effects pooled
    effect over sites, with between-site heterogeneity (Q, p, I², τ²)."""
    from twin_pipeline.lib.meta_analysis import pool_table

    pooled = pool_table(site_effects, ["therapy", "subgroup"]) if len(site_effects) else pd.DataFrame(
        columns=["therapy", "subgroup", "n_sites", "fixed", "fixed_se", "random", "random_se", "tau2", "q",
                 "q_pvalue", "i2"])
    meta = {"dagster/row_count": len(pooled), "sites": int(site_effects["siteid"].nunique()) if len(site_effects) else 0}
    for r in pooled.itertuples():
        meta[f"{r.therapy}_random"] = float(r.random)
        meta[f"{r.therapy}_i2"] = float(r.i2)
    yield dg.Output(pooled, metadata=meta)
    ok = bool(pooled[["fixed", "random"]].notna().all().all()) if len(pooled) else True
    yield dg.AssetCheckResult(check_name="pooled_effects_finite", passed=ok)


def _site_thresholds(landing: LandingResource, sites) -> dict[str, int]:
    return {s: int(landing.site_config(s).small_cell_threshold) for s in sites}


@dg.asset(
    key=["federated", "pooled_age_sex"],
    group_name="federated",
    kinds={"duckdb"},
    ins={"age_sex": dg.AssetIn(key=["federated", "site_age_sex"]), "labs": dg.AssetIn(key=["federated", "site_labs"])},
    check_specs=[
        dg.AssetCheckSpec("cross_site_counts_consistent", asset=["federated", "pooled_age_sex"], blocking=True,
                          description="No negative counts other than -99/-999; no subgroup above its site's total."),
        dg.AssetCheckSpec("lab_units_consistent", asset=["federated", "pooled_age_sex"], blocking=False,
                          description="No site's lab distribution is off the others by a unit-error-sized factor."),
    ],
    pool=WAREHOUSE_POOL,
)
def pooled_age_sex(context: dg.AssetExecutionContext, age_sex: pd.DataFrame, labs: pd.DataFrame,
                   landing: LandingResource):
    """Coordinator: patients by age group × sex pooled over sites from the shared files only, with the
    range that masked cells can hide."""
    thresholds = _site_thresholds(landing, age_sex["siteid"].unique())
    pooled = fed.pool_counts([age_sex], ["cohort", "age_group", "sex"], ["pts_all", "pts_ever_severe"], thresholds)
    qc = fed.cross_site_qc(age_sex, labs)
    yield dg.Output(pooled, metadata={"dagster/row_count": len(pooled), "sites": int(age_sex["siteid"].nunique())})
    yield dg.AssetCheckResult(
        check_name="cross_site_counts_consistent",
        passed=not qc["negative_counts"] and not qc["subgroup_exceeds_total"],
        metadata={k: dg.MetadataValue.json(v) for k, v in qc.items() if k != "lab_unit_suspect"},
    )
    yield dg.AssetCheckResult(
        check_name="lab_units_consistent", passed=not qc["lab_unit_suspect"],
        severity=dg.AssetCheckSeverity.WARN, metadata={"suspects": dg.MetadataValue.json(qc["lab_unit_suspect"])},
    )


@dg.asset(
    key=["federated", "pooled_diag_proc_med"],
    group_name="federated",
    kinds={"duckdb"},
    ins={"dpm": dg.AssetIn(key=["federated", "site_diag_proc_med"])},
    check_specs=[dg.AssetCheckSpec("pooled_non_negative", asset=["federated", "pooled_diag_proc_med"], blocking=True)],
    pool=WAREHOUSE_POOL,
)
def pooled_diag_proc_med(context: dg.AssetExecutionContext, dpm: pd.DataFrame, landing: LandingResource):
    """Coordinator: patients per concept and window pooled over sites from the shared files only."""
    thresholds = _site_thresholds(landing, dpm["siteid"].unique())
    pooled = fed.pool_counts([dpm], ["cohort", "concept_type", "concept_code"], list(fed.DPM_WINDOWS), thresholds)
    yield dg.Output(pooled, metadata={"dagster/row_count": len(pooled), "sites": int(dpm["siteid"].nunique())})
    ok = bool((pooled[list(fed.DPM_WINDOWS)] >= 0).all().all()) if len(pooled) else True
    yield dg.AssetCheckResult(check_name="pooled_non_negative", passed=ok)
