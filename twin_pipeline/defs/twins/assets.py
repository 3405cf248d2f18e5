"""`twin` layer: one digital twin per patient, across every site and delivery."""


from datetime import timedelta

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from twin_pipeline.defs.gating import gate_results, gated_outputs, output_metadata
from twin_pipeline.defs.partitions import WAREHOUSE_POOL
from twin_pipeline.lib.twin import TwinInputs, build_twins
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
    return TwinInputs(
        person=omop["person"],
        condition=omop["condition_occurrence"],
        measurement=omop["measurement"],
        drug=omop["drug_exposure"],
        procedure=omop["procedure_occurrence"],
        interview=interviews,
        waveforms=waves,
    )


# the nightly refresh keeps twins within a day; alert when older than 36 h, fail at 48 h
TWIN_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=36))


@dg.asset(
    key=["twin", "patient_twin"],
    group_name="twin",
    freshness_policy=TWIN_FRESHNESS,
    kinds={"duckdb", "pandas"},
    deps=[dg.AssetKey(["omop", t]) for t in OMOP_TABLES]
    + [dg.AssetKey(["features", "interview_scores"])]
    + [dg.AssetKey(["features", t]) for t in FEATURE_TABLES.values()],
    check_specs=gated_outputs(["twin", "patient_twin"], suites.twin_patient_twin),
    pool=WAREHOUSE_POOL,
)
def patient_twin(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
    """One row per patient (site × pseudonym): demographics, coded conditions, labs, medications,
    interview scores, waveform features, therapy, 90-day outcome, provenance and completeness."""
    inputs = load_twin_inputs(warehouse)
    twins = build_twins(inputs, twin_version=context.run.run_id, built_at=pd.Timestamp.now(tz="UTC").tz_localize(None))
    meta = output_metadata(twins)
    meta["sites"] = int(twins["site_id"].nunique())
    meta["twins_per_site"] = dg.MetadataValue.json(twins["site_id"].value_counts().sort_index().to_dict())
    meta["with_outcome"] = int(twins["outcome_6mwd_90d_m"].notna().sum())
    meta["therapy_counts"] = dg.MetadataValue.json(twins["therapy"].value_counts().to_dict())
    meta["mean_completeness"] = float(twins["completeness"].mean()) if len(twins) else 0.0
    meta["twin_version"] = context.run.run_id
    yield dg.Output(twins, metadata=meta)
    yield from gate_results(["twin", "patient_twin"], twins, suites.twin_patient_twin)
