"""`privacy` layer: proof that nothing downstream of `deid` holds an identifier, and how
re-identifiable the twins are by their quasi-identifiers.

`privacy/leak_scan` reads the landing area (PHI zone) in memory inside the run, searches the warehouse,
the waveform store, MLflow and the Dagster event log, and stores only counts by kind and location.
"""


import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

from twin_pipeline.defs.partitions import WAREHOUSE_POOL
from twin_pipeline.lib import kanon, leak_scan
from twin_pipeline.resources import LandingResource, MlflowResource, WaveformStoreResource

LEAK_CHECK = "no_identifier_leaks"
KANON_CHECK = "k_anonymity_of_quasi_identifiers"
UPSTREAM = [dg.AssetKey(["twin", "patient_twin"]), dg.AssetKey(["ml", "treatment_simulation"]),
            dg.AssetKey(["ml", "effect_evaluation"])]


class LeakScanConfig(dg.Config):
    max_dagster_runs: int = Field(default=500, description="Most recent Dagster runs whose event logs are scanned.")
    max_locations: int = Field(default=50, description="Locations listed in metadata (counts only, never values).")


@dg.asset(
    key=["privacy", "leak_scan"],
    group_name="privacy",
    kinds={"duckdb", "mlflow", "wfdb"},
    deps=UPSTREAM,
    check_specs=[dg.AssetCheckSpec(
        LEAK_CHECK, asset=dg.AssetKey(["privacy", "leak_scan"]), blocking=True,
        description="Blocking: no raw identifier of any delivery in the warehouse, waveform store, MLflow "
                    "or Dagster event log (exact and normalized forms).")],
    pool=WAREHOUSE_POOL,
)
def leak_scan_report(
    context: dg.AssetExecutionContext,
    config: LeakScanConfig,
    landing: LandingResource,
    warehouse: DuckDBResource,
    waveform_store: WaveformStoreResource,
    mlflow: MlflowResource,
):
    """Identifier hits downstream of the privacy boundary, by kind and location (table.column, file,
    MLflow field, Dagster event type); one row per scan, aggregates only."""
    deliveries = landing.ready_deliveries()
    ids = leak_scan.collect_identifiers([d.path for d in deliveries])  # PHI: in memory, this run only
    report = leak_scan.ScanReport()
    with warehouse.get_connection() as con:
        report.merge(leak_scan.scan_warehouse(con, ids))
    report.merge(leak_scan.scan_files(waveform_store.root, ids, area="waveform_store", skip_suffixes=(".dat",)))
    report.merge(leak_scan.scan_mlflow(mlflow.tracking_uri, ids,
                                       [mlflow.artifact_root] if mlflow.artifact_root else []))

    class _Recent:  # the most recent runs only, so a long-lived instance stays fast to scan
        def get_runs(self):
            return context.instance.get_runs(limit=config.max_dagster_runs)

        def all_logs(self, run_id):
            return context.instance.all_logs(run_id)

    report.merge(leak_scan.scan_dagster(_Recent(), ids, serialize=dg.serialize_value))
    meta = {
        "deliveries_scanned": len(deliveries),
        "identifiers_collected": dg.MetadataValue.json(dict(sorted(ids.counts.items()))),
        "scanned": dg.MetadataValue.json(dict(sorted(report.scanned.items()))),
        "hits_total": report.total,
        "hits_by_kind": dg.MetadataValue.json(report.by_kind()),
        "hits_by_area": dg.MetadataValue.json(report.by_area()),
        "hit_locations": dg.MetadataValue.json(report.locations(config.max_locations)),
    }
    context.log.info(f"leak scan: {len(deliveries)} deliveries, {report.total} identifier hits")
    yield dg.MaterializeResult(metadata=meta)
    yield dg.AssetCheckResult(
        check_name=LEAK_CHECK,
        passed=report.total == 0,
        metadata={"hits_total": report.total, "hits_by_kind": dg.MetadataValue.json(report.by_kind()),
                  "hits_by_area": dg.MetadataValue.json(report.by_area())},
        description=None if report.total == 0 else
        f"{report.total} identifier hits downstream of deid: kinds {sorted(report.by_kind())}",
    )


class KAnonymityConfig(dg.Config):
    k: int = Field(default=kanon.DEFAULT_K, description="Minimum equivalence-class size (k of k-anonymity).")


@dg.asset(
    key=["privacy", "twin_k_anonymity"],
    group_name="privacy",
    kinds={"pandas"},
    ins={"twins": dg.AssetIn(key=["twin", "patient_twin"])},
    check_specs=[dg.AssetCheckSpec(
        KANON_CHECK, asset=dg.AssetKey(["privacy", "twin_k_anonymity"]), blocking=True,
        description="Warns (severity WARN, so nothing is blocked) when twins sit in quasi-identifier "
                    "classes (age band, sex, ZIP3, site) smaller than k.")],
)
def twin_k_anonymity(context: dg.AssetExecutionContext, config: KAnonymityConfig, twins: pd.DataFrame):
    """k-anonymity of the twins over age band, sex, ZIP3 and site: smallest equivalence class and how
    many twins sit in classes below k (aggregates only)."""
    rep = kanon.k_anonymity(kanon.twin_quasi_identifiers(twins), kanon.TWIN_QUASI_IDENTIFIERS, k=config.k)
    meta = {
        "k": rep.k,
        "quasi_identifiers": dg.MetadataValue.json(list(rep.quasi_identifiers)),
        "records": rep.records,
        "classes": rep.classes,
        "smallest_class": rep.smallest_class,
        "median_class": rep.median_class,
        "classes_below_k": rep.classes_below_k,
        "records_below_k": rep.records_below_k,
        "share_below_k": round(rep.share_below_k, 4),
        "class_size_histogram": dg.MetadataValue.json(rep.size_histogram),
    }
    yield dg.MaterializeResult(metadata=meta)
    yield dg.AssetCheckResult(
        check_name=KANON_CHECK,
        passed=rep.is_k_anonymous,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"k": rep.k, "smallest_class": rep.smallest_class, "records_below_k": rep.records_below_k,
                  "share_below_k": round(rep.share_below_k, 4)},
    )
