"""`omop` layer: the common language. OMOP-CDM-shaped tables with standard codes and canonical units."""


import warnings
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from twin_pipeline.defs.gating import delivery_status, gate_results, gated_outputs, output_metadata
from twin_pipeline.defs.partitions import PARTITION_EXPR, WAREHOUSE_POOL, partition_keys, site_delivery_partitions
from twin_pipeline.lib import harmonize as hz
from twin_pipeline.quality import suites
from twin_pipeline.resources import LandingResource
from twin_pipeline.sources.landing import Quarantine
from twin_pipeline.lib.interviews import ANSWER_FIELDS

OMOP_OUTPUTS = {
    "person": (suites.omop_person, "One row per patient × delivery: OMOP person with gender concept and care site."),
    "visit_occurrence": (suites.omop_visit_occurrence, "One row per encounter."),
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
        "One row per text EHR observation or interview answer (coded question, numeric answer).",
    ),
}
DEID_INPUTS = ["person", "visit", "condition", "observation", "medication", "procedure", "interview"]


class HarmonizeConfig(dg.Config):
    mapping_threshold: float = Field(
        default=0.95, description="Minimum fraction of rows with a standard concept, per vocabulary, for the gate."
    )


def coverage_check_spec(name: str, **kw) -> dg.AssetCheckSpec:
    with warnings.catch_warnings():  # partition-scoped check specs are a Dagster 1.13 preview feature
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, partitions_def=site_delivery_partitions, **kw)


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
    meas, obs_text, rejected = hz.harmonize_measurements(
        t["observation"], vocab, local_lab_codes=site.local_lab_codes, unit_alias=site.unit_alias
    )
    quarantine = Quarantine(Path(landing.quarantine_dir), site_id, delivery_id)
    if len(rejected):
        where = f": {site_id}/{delivery_id} " + rejected["source_file"].astype(str) + " row " + rejected[
            "source_row"].astype(str)
        quarantine.reject_rows("omop_measurement", rejected.drop(columns="_reason"), rejected["_reason"] + where)
    quarantine.write(["omop_measurement"])
    interview_obs = hz.harmonize_interviews(t["interview"], ANSWER_FIELDS)
    observation = pd.concat([f for f in (obs_text, interview_obs) if len(f)] or [interview_obs], ignore_index=True)
    observation["value_as_string"] = observation.get("value_as_string", pd.Series(dtype="string")).astype("string")
    outputs = {
        "person": hz.harmonize_person(t["person"]),
        "visit_occurrence": hz.harmonize_visits(t["visit"]),
        "condition_occurrence": hz.harmonize_conditions(t["condition"], vocab),
        "measurement": meas,
        "drug_exposure": hz.harmonize_drugs(t["medication"], vocab),
        "procedure_occurrence": hz.harmonize_procedures(t["procedure"], vocab),
        "observation": observation,
    }
    received = {"measurement": len(t["observation"]) - len(obs_text), "observation": len(obs_text) + len(interview_obs)}
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

    coverage = hz.mapping_coverage(
        {
            "conditions_snomed_to_icd10": (outputs["condition_occurrence"], "condition_concept_code"),
            "labs_to_loinc": (outputs["measurement"], "measurement_concept_code"),
            "drugs_rxnorm_to_ingredient": (outputs["drug_exposure"], "drug_concept_code"),
        }
    )
    low = {k: v for k, v in coverage.items() if v < config.mapping_threshold}
    yield dg.AssetCheckResult(
        asset_key=dg.AssetKey(["omop", "condition_occurrence"]),
        check_name="mapping_coverage",
        passed=not low or not present,
        metadata={
            "threshold": config.mapping_threshold,
            **{f"coverage_{k}": round(v, 4) for k, v in coverage.items()},
            "below_threshold": dg.MetadataValue.json(sorted(low)),
        },
        description=None if not low else f"mapping coverage below {config.mapping_threshold:.0%} for {sorted(low)}",
    )
