"""`omop` layer: the common language. OMOP-CDM-shaped tables with standard codes and canonical units."""


import warnings
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from twin_pipeline.defs.gating import delivery_status, gate_results, gated_outputs, output_metadata
from twin_pipeline.defs.partitions import PARTITION_EXPR, WAREHOUSE_POOL, partition_keys, site_delivery_partitions
from twin_pipeline.lib import dqd
from twin_pipeline.lib import harmonize as hz
from twin_pipeline.quality import suites
from twin_pipeline.resources import LandingResource
from twin_pipeline.sources.landing import Quarantine
from twin_pipeline.lib.interviews import ANSWER_FIELDS

OMOP_OUTPUTS = {
    "person": (suites.omop_person, "One row per patient × delivery: OMOP person with gender concept and care site."),
    "visit_occurrence": (suites.omop_visit_occurrence, "One row per encounter: OMOP visit concept (inpatient / outpatient / emergency), class as delivered."),
    "condition_occurrence": (
        suites.omop_condition_occurrence,
        "One row per diagnosis: SNOMED CT source value, ICD-10-CM concept, phenotype group.",
    ),
    "measurement": (
        suites.omop_measurement,
        "One row per numeric lab/vital: LOINC concept, value in the canonical UCUM unit, plausibility flag.",
    ),
    "drug_exposure": (suites.omop_drug_exposure, "One row per medication: RxNorm source, ingredient, class, therapy arm."),
    "procedure_occurrence": (suites.omop_procedure_occurrence, "One row per procedure, therapy arm where it is one."),
    "observation": (
        suites.omop_observation,
        "One row per text EHR observation, Observation-domain SNOMED finding, or interview answer.",
    ),
}
DEID_INPUTS = ["person", "visit", "condition", "observation", "medication", "procedure", "interview"]


FOURCE_LAB_RANGE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "federated" / "4ce" / "lab.range.converted.csv"


class HarmonizeConfig(dg.Config):
    mapping_threshold: float = Field(
        default=0.95, description="Minimum fraction of rows with a standard concept, per vocabulary, for the gate."
    )
    fource_lab_range_csv: str = Field(
        default=str(FOURCE_LAB_RANGE),
        description="4CE lab.range.converted.csv for the site-level lab range check; missing file = check not evaluated.",
    )


def coverage_check_spec(name: str, **kw) -> dg.AssetCheckSpec:
    with warnings.catch_warnings():  # partition-scoped check specs are a Dagster 1.13 preview feature
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, partitions_def=site_delivery_partitions, **kw)


def dqd_check_name(check: dqd.DqdCheck) -> str:
    return f"dqd_{check.category}_{check.name}"


def _out_name(table: str) -> str:
    return dg.AssetKey(["omop", table]).to_python_identifier()


@dg.multi_asset(
    outs={
        _out_name(t): dg.AssetOut(
            key=["omop", t],
            group_name="omop",
            description=desc,
            kinds={"duckdb", "pandas"},
            metadata={"partition_expr": PARTITION_EXPR},
        )
        for t, (_, desc) in OMOP_OUTPUTS.items()
    },
    partitions_def=site_delivery_partitions,
    ins={f"deid_{d}": dg.AssetIn(key=["deid", d]) for d in DEID_INPUTS},
    check_specs=[s for t, (suite, _) in OMOP_OUTPUTS.items() for s in gated_outputs(["omop", t], suite, site_delivery_partitions)]
    + [
        coverage_check_spec(
            "mapping_coverage",
            asset=["omop", "condition_occurrence"],
            blocking=True,
            description="Share of rows mapped to a standard concept per vocabulary ≥ threshold (conditions, labs, drugs).",
        )
    ]
    + [
        coverage_check_spec(dqd_check_name(c), asset=["omop", c.table], blocking=c.blocking,
                            description=f"DQD {c.category} ({'blocking' if c.blocking else 'warn'}, "
                            f"≤ {c.threshold_pct:g} % violating rows): {c.description}")
        for c in dqd.CHECKS
    ],
    pool=WAREHOUSE_POOL,
    can_subset=False,
)
def harmonize(context: dg.AssetExecutionContext, config: HarmonizeConfig, landing: LandingResource, **deid_tables):
    """Map codes to standard vocabularies and units to canonical UCUM for one site delivery."""
    site_id, delivery_id = partition_keys(context)
    present = delivery_status(landing, site_id, delivery_id)
    site = landing.site_config(site_id)
    vocab = hz.load_vocabulary()
    t = {k.removeprefix("deid_"): v for k, v in deid_tables.items()}
    h = hz.harmonize_ehr(t, vocab, local_lab_codes=site.local_lab_codes, unit_alias=site.unit_alias,
                         interview_fields=ANSWER_FIELDS)
    rejected = h.rejected
    quarantine = Quarantine(Path(landing.quarantine_dir), site_id, delivery_id)
    if len(rejected):
        where = f": {site_id}/{delivery_id} " + rejected["source_file"].astype(str) + " row " + rejected[
            "source_row"].astype(str)
        quarantine.reject_rows("omop_measurement", rejected.drop(columns="_reason"), rejected["_reason"] + where)
    quarantine.write(["omop_measurement"])
    outputs = h.tables
    n_meas_src = len(t["observation"]) - h.text_observations
    received = {"measurement": n_meas_src, "observation": len(outputs["observation"])}
    for table, (suite, _) in OMOP_OUTPUTS.items():
        df = outputs[table]
        q = len(rejected) if table == "measurement" else 0
        meta = output_metadata(df, received=received.get(table, len(df)) if table in received else None,
                               quarantined=q, delivery_present=present)
        if table == "measurement":
            meta["rejected_reasons"] = dg.MetadataValue.json(rejected["_reason"].value_counts().to_dict())
            meta["range_flags"] = dg.MetadataValue.json(df["range_flag"].value_counts().to_dict())
        yield dg.Output(df, output_name=_out_name(table), metadata=meta)
        yield from gate_results(["omop", table], df, suite, delivery_present=present)

    coverage = h.coverage()
    low = {k: v for k, v in coverage.items() if v < config.mapping_threshold}
    yield dg.AssetCheckResult(
        asset_key=dg.AssetKey(["omop", "condition_occurrence"]),
        check_name="mapping_coverage",
        passed=not low or not present,
        metadata={
            "site_id": site_id,
            "threshold": config.mapping_threshold,
            **{f"coverage_{k}": round(v, 4) for k, v in coverage.items()},
            "rows_by_vocabulary": dg.MetadataValue.json(h.counts()),
            "below_threshold": dg.MetadataValue.json(sorted(low)),
        },
        description=None if not low else f"mapping coverage below {config.mapping_threshold:.0%} for {sorted(low)}",
    )

    ranges_path = Path(config.fource_lab_range_csv)
    ranges = dqd.load_fource_ranges(ranges_path) if config.fource_lab_range_csv and ranges_path.exists() else None
    results = dqd.run_checks(outputs, vocab, fource_ranges=ranges)
    for r in results:
        yield dg.AssetCheckResult(
            asset_key=dg.AssetKey(["omop", r.check.table]),
            check_name=dqd_check_name(r.check),
            passed=r.passed or not present,
            severity=dg.AssetCheckSeverity.ERROR if r.check.blocking else dg.AssetCheckSeverity.WARN,
            metadata={k: (dg.MetadataValue.json(v) if isinstance(v, dict) else v)
                      for k, v in r.metadata(site_id).items()},
        )
    context.log.info(f"{site_id}/{delivery_id}: DQD {dqd.summary(results)}; mapping coverage {coverage}")


@dg.asset(
    key=["omop", "device_exposure"],
    group_name="omop",
    kinds={"duckdb", "pandas"},
    partitions_def=site_delivery_partitions,
    metadata={"partition_expr": PARTITION_EXPR},
    ins={"records": dg.AssetIn(key=["deid", "waveform_record"])},
    check_specs=gated_outputs(["omop", "device_exposure"], suites.omop_device_exposure, site_delivery_partitions),
    pool=WAREHOUSE_POOL,
)
def device_exposure(context: dg.AssetExecutionContext, records):
    """One row per waveform recording (the waveform record index): device concept, person, start and end."""
    df = hz.harmonize_devices(records)
    meta = output_metadata(df)
    if len(df):
        meta["by_device"] = dg.MetadataValue.json(df["device_source_value"].value_counts().to_dict())
    yield dg.Output(df, metadata=meta)
    yield from gate_results(["omop", "device_exposure"], df, suites.omop_device_exposure)


@dg.asset(
    key=["omop", "care_site"],
    group_name="omop",
    kinds={"duckdb", "yaml"},
    deps=[dg.AssetKey(["omop", "person"])],
    check_specs=gated_outputs(["omop", "care_site"], suites.omop_care_site),
    pool=WAREHOUSE_POOL,
)
def care_site(context: dg.AssetExecutionContext, landing: LandingResource, warehouse: DuckDBResource):
    """One row per site that has delivered: name, country, conventions and small-cell threshold (site YAML)."""
    with warehouse.get_connection() as conn:
        sites = [r[0] for r in conn.execute("select distinct site_id from omop.person order by 1").fetchall()]
    df = hz.care_sites([landing.site_config(s) for s in sites])
    yield dg.Output(df, metadata={"dagster/row_count": len(df)})
    yield from gate_results(["omop", "care_site"], df, suites.omop_care_site)
