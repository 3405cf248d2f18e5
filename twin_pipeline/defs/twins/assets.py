"""`twin` layer: one digital twin per patient, across every site and delivery."""


from datetime import timedelta

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from twin_pipeline.defs.gating import gate_results, gated_outputs, output_metadata
from twin_pipeline.defs.partitions import WAREHOUSE_POOL
from twin_pipeline.lib.twin import (
    TwinInputs,
    append_history,
    build_twins,
    drop_current_if_schema_changed,
    history_problems,
)
from twin_pipeline.lib.phenotype import CALL_COLUMNS as PHENOTYPE_CALLS
from twin_pipeline.quality import suites

OMOP_TABLES = ["person", "condition_occurrence", "measurement", "drug_exposure", "procedure_occurrence"]
FEATURE_TABLES = {
    "ecg_monitor": "ecg_record_features",
    "ventilator": "ventilator_record_features",
    "wearable": "wearable_record_features",
}


def read_table(conn, schema: str, table: str, *, optional: bool = False) -> pd.DataFrame:
    """Read a whole warehouse table. Optional tables (a device no site has yet) read as empty."""
    exists = conn.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, table]
    ).fetchone()[0]
    if not exists and optional:
        return pd.DataFrame()
    if not exists:
        raise dg.Failure(
            f"warehouse table {schema}.{table} does not exist: materialize the site × delivery partitions "
            "first (the landing sensor, `make demo`, or `twin-pipeline backfill`)."
        )
    return conn.execute(f'select * from "{schema}"."{table}"').df()


def load_twin_inputs(warehouse: DuckDBResource) -> TwinInputs:
    with warehouse.get_connection() as conn:
        omop = {t: read_table(conn, "omop", t) for t in OMOP_TABLES}
        interviews = read_table(conn, "features", "interview_scores", optional=True)
        waves = {k: read_table(conn, "features", t, optional=True) for k, t in FEATURE_TABLES.items()}
        visit = read_table(conn, "omop", "visit_occurrence", optional=True)
    return TwinInputs(
        person=omop["person"],
        condition=omop["condition_occurrence"],
        measurement=omop["measurement"],
        drug=omop["drug_exposure"],
        procedure=omop["procedure_occurrence"],
        interview=interviews,
        waveforms=waves,
        visit=visit if len(visit) else None,
    )


# the nightly refresh keeps twins within a day; alert when older than 36 h, fail at 48 h
TWIN_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=36))


HISTORY_CHECK = "history_one_row_per_patient_per_version"


@dg.asset(
    key=["twin", "patient_twin"],
    group_name="twin",
    freshness_policy=TWIN_FRESHNESS,
    kinds={"duckdb", "pandas"},
    deps=[dg.AssetKey(["omop", t]) for t in OMOP_TABLES]
    + [dg.AssetKey(["omop", "visit_occurrence"]), dg.AssetKey(["features", "interview_scores"])]
    + [dg.AssetKey(["features", t]) for t in FEATURE_TABLES.values()],
    check_specs=gated_outputs(["twin", "patient_twin"], suites.twin_patient_twin)
    + [dg.AssetCheckSpec(HISTORY_CHECK, asset=dg.AssetKey(["twin", "patient_twin"]), blocking=True,
                         description="twin.patient_twin_history: one row per patient per twin version, "
                         "probabilities in [0, 1], every twin traceable to its deliveries.")],
    pool=WAREHOUSE_POOL,
)
def patient_twin(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
    """One row per patient (site × pseudonym) of the current twin version: demographics, reconciled
    phenotypes with evidence, labs, medications, interviews, waveforms, outcome, provenance, completeness.
    Every version is also appended to `twin.patient_twin_history` (one row per patient per version)."""
    version = context.run.run_id
    inputs = load_twin_inputs(warehouse)
    twins = build_twins(inputs, twin_version=version, built_at=pd.Timestamp.now(tz="UTC").tz_localize(None))
    gate = list(gate_results(["twin", "patient_twin"], twins, suites.twin_patient_twin))
    with warehouse.get_connection() as conn:
        drop_current_if_schema_changed(conn, twins)
        if all(r.passed for r in gate):  # only versions that passed their gate enter the history
            append_history(conn, twins)
            problems = history_problems(conn, version, len(twins))
        else:
            problems = {"not_written_gate_failed": 1}
    meta = output_metadata(twins)
    meta["sites"] = int(twins["site_id"].nunique())
    meta["twins_per_site"] = dg.MetadataValue.json(twins["site_id"].value_counts().sort_index().to_dict())
    meta["with_outcome"] = int(twins["outcome_6mwd_90d_m"].notna().sum())
    meta["therapy_counts"] = dg.MetadataValue.json(twins["therapy"].value_counts().to_dict())
    meta["mean_completeness"] = float(twins["completeness"].mean()) if len(twins) else 0.0
    meta["reconciled_phenotype_counts"] = dg.MetadataValue.json(
        {c.removeprefix("ph_"): int(twins[c].sum()) for c in PHENOTYPE_CALLS})
    meta["phenotype_calls_changed_vs_code"] = dg.MetadataValue.json(
        {c.removeprefix("ph_"): int((twins[c] != (twins[f"dx_{c.removeprefix('ph_')}"] > 0)).sum())
         for c in PHENOTYPE_CALLS})
    meta["twin_version"] = version
    yield dg.Output(twins, metadata=meta)
    yield from gate
    yield dg.AssetCheckResult(
        asset_key=dg.AssetKey(["twin", "patient_twin"]), check_name=HISTORY_CHECK,
        passed=not any(problems.values()), metadata={k: int(v) for k, v in problems.items()},
    )
