"""`deid` layer: parse a site delivery, quarantine what cannot be read, de-identify the rest.

This is the privacy boundary: raw frames live only in memory inside these assets; what is written
to the warehouse (schema `deid`) carries pseudonyms, shifted dates and generalised demographics.
"""


from pathlib import Path

import dagster as dg
import pandas as pd

from twin_pipeline.defs.gating import delivery_status, gate_then_output, gated_outputs, output_metadata
from twin_pipeline.defs.partitions import (
    PARTITION_EXPR,
    WAREHOUSE_POOL,
    partition_keys,
    site_delivery_partitions,
)
from twin_pipeline.lib import deid_tables
from twin_pipeline.lib.deid import deidentify_wfdb_comments, load_restricted_zip3
from twin_pipeline.lib.harmonize import default_vocab_dir
from twin_pipeline.quality import suites
from twin_pipeline.resources import DeidResource, LandingResource, WaveformStoreResource
from twin_pipeline.sources.landing import Quarantine
from twin_pipeline.sources.redcap import read_interviews
from twin_pipeline.sources.synthea_csv import EHR_TABLES, read_ehr
from twin_pipeline.sources.waveform_manifest import read_manifest
from twin_pipeline.sources.wfdb_io import WaveformReadError, read_record, write_record

EHR_OUTPUTS = {  # output name -> (source table, suite)
    "person": ("patients", suites.deid_person),
    "visit": ("encounters", suites.deid_visit),
    "condition": ("conditions", suites.deid_condition),
    "observation": ("observations", suites.deid_observation),
    "medication": ("medications", suites.deid_medication),
    "procedure": ("procedures", suites.deid_procedure),
}
EHR_DESCRIPTIONS = {
    "person": "One row per patient × delivery: pseudonym, sex, race, ethnicity, age band (90+), ZIP3, shifted birth/death dates.",
    "visit": "One row per encounter: pseudonymous visit and person ids, shifted start/end, class and code.",
    "condition": "One row per coded diagnosis (SNOMED CT as delivered), shifted dates.",
    "observation": "One row per EHR observation (labs, vitals, exams) with source code, value and unit as delivered.",
    "medication": "One row per medication order (RxNorm as delivered), shifted dates.",
    "procedure": "One row per procedure (SNOMED CT as delivered), shifted dates.",
}


def _outs() -> dict[str, dg.AssetOut]:
    return {
        dg.AssetKey(["deid", name]).to_python_identifier(): dg.AssetOut(
            key=["deid", name],
            group_name="deid",
            description=EHR_DESCRIPTIONS[name],
            kinds={"duckdb", "pandas"},
            metadata={"partition_expr": PARTITION_EXPR},
        )
        for name in EHR_OUTPUTS
    }


@dg.multi_asset(
    outs=_outs(),
    partitions_def=site_delivery_partitions,
    check_specs=[s for name, (_, suite) in EHR_OUTPUTS.items() for s in gated_outputs(["deid", name], suite, site_delivery_partitions)],
    pool=WAREHOUSE_POOL,
    can_subset=False,
)
def deid_ehr(context: dg.AssetExecutionContext, landing: LandingResource, deid: DeidResource):
    """Read the delivery's Synthea CSV tables, quarantine unreadable rows, write de-identified tables."""
    site_id, delivery_id = partition_keys(context)
    present = delivery_status(landing, site_id, delivery_id)
    site = landing.site_config(site_id)
    key = deid.key()
    quarantine = Quarantine(Path(landing.quarantine_dir), site_id, delivery_id)
    load = read_ehr(landing.delivery_dir(site_id, delivery_id), site, delivery_id, quarantine)
    restricted = load_restricted_zip3(default_vocab_dir() / "restricted_zip3.csv")
    frames = deid_tables.deidentify_ehr(
        {t: load.tables[t].frame for t in EHR_TABLES},
        key=key,
        site_id=site_id,
        delivery_id=delivery_id,
        restricted_zip3=restricted,
    )
    quarantine.write([f"ehr_{t}" for t in EHR_TABLES] + ["ehr_fhir"])
    if present:  # re-identification stays at the site: pseudonym -> local id, under landing only
        deid_tables.write_crosswalk(
            landing.delivery_dir(site_id, delivery_id).parent, delivery_id,
            {"person": load.tables["patients"].frame["Id"], "encounter": load.tables["encounters"].frame["Id"]},
            key=key, site_id=site_id,
        )
    counts = load.counts()
    for name, (table, suite) in EHR_OUTPUTS.items():
        df = frames[name]
        c = counts[table]
        meta = output_metadata(df, received=c["received"], quarantined=c["quarantined"], delivery_present=present)
        meta["quarantine_reasons"] = dg.MetadataValue.json(quarantine.reasons(f"ehr_{table}"))
        meta["file_present"] = load.tables[table].file_present
        yield from gate_then_output(["deid", name], df, suite, delivery_present=present, metadata=meta,
                                    output_name=dg.AssetKey(["deid", name]).to_python_identifier())
    total_q = sum(c["quarantined"] for c in counts.values())
    context.log.info(
        f"{site_id}/{delivery_id}: received {sum(c['received'] for c in counts.values())} EHR rows, "
        f"quarantined {total_q}"
    )


@dg.asset(
    key=["deid", "interview"],
    group_name="deid",
    kinds={"duckdb", "pandas"},
    partitions_def=site_delivery_partitions,
    metadata={"partition_expr": PARTITION_EXPR},
    check_specs=gated_outputs(["deid", "interview"], suites.deid_interview, site_delivery_partitions),
    pool=WAREHOUSE_POOL,
)
def deid_interview(context: dg.AssetExecutionContext, landing: LandingResource, deid: DeidResource):
    """One row per REDCap interview: pseudonyms, shifted date, coded answers, scrubbed free-text note."""
    site_id, delivery_id = partition_keys(context)
    present = delivery_status(landing, site_id, delivery_id)
    site = landing.site_config(site_id)
    quarantine = Quarantine(Path(landing.quarantine_dir), site_id, delivery_id)
    ddir = landing.delivery_dir(site_id, delivery_id)
    load = read_interviews(ddir, site, delivery_id, quarantine)
    # the patient's own structured identifiers help scrub their notes (in memory only)
    scratch = Quarantine(Path(landing.quarantine_dir), site_id, delivery_id)
    patients = read_ehr(ddir, site, delivery_id, scratch).tables["patients"].frame
    df = deid_tables.deidentify_interviews(
        load.frame, load.fields, key=deid.key(), site_id=site_id, delivery_id=delivery_id,
        known=deid_tables.known_identifiers(patients),
    )
    quarantine.write(["interviews_records", "interviews_dictionary"])
    meta = output_metadata(df, received=load.received, quarantined=load.quarantined, delivery_present=present)
    meta["quarantine_reasons"] = dg.MetadataValue.json(quarantine.reasons("interviews_records"))
    yield from gate_then_output(["deid", "interview"], df, suites.deid_interview, delivery_present=present,
                                metadata=meta, output_name="result")


@dg.asset(
    key=["deid", "waveform_record"],
    group_name="deid",
    kinds={"duckdb", "pandas", "wfdb"},
    partitions_def=site_delivery_partitions,
    metadata={"partition_expr": PARTITION_EXPR},
    check_specs=gated_outputs(["deid", "waveform_record"], suites.deid_waveform_record, site_delivery_partitions),
    pool=WAREHOUSE_POOL,
)
def deid_waveform_record(
    context: dg.AssetExecutionContext,
    landing: LandingResource,
    deid: DeidResource,
    waveform_store: WaveformStoreResource,
):
    """One row per waveform record: a de-identified WFDB copy (pseudonymous name, shifted base time,
    scrubbed comments) in the waveform store, indexed with device kind, rate and duration."""
    site_id, delivery_id = partition_keys(context)
    present = delivery_status(landing, site_id, delivery_id)
    site = landing.site_config(site_id)
    key = deid.key()
    quarantine = Quarantine(Path(landing.quarantine_dir), site_id, delivery_id)
    ddir = landing.delivery_dir(site_id, delivery_id)
    man = read_manifest(ddir, site, delivery_id, quarantine)
    scratch = Quarantine(Path(landing.quarantine_dir), site_id, delivery_id)
    patients = read_ehr(ddir, site, delivery_id, scratch).tables["patients"].frame
    known = deid_tables.known_identifiers(patients)
    store = waveform_store.partition_dir(site_id, delivery_id)
    store.mkdir(parents=True, exist_ok=True)
    index = deid_tables.waveform_index(man.frame, key=key, site_id=site_id, delivery_id=delivery_id, store_dir=store)
    keep = []
    for i, row in man.frame.iterrows():
        src = ddir / "waveforms" / str(row["record"])
        try:
            rec = read_record(src)
        except Exception as exc:  # noqa: BLE001 - any unreadable record is quarantined, never fatal
            # the exception text may carry the raw record name (an MRN): only its type leaves
            kind = "unreadable WFDB record" if isinstance(exc, WaveformReadError) else "WFDB read error"
            quarantine.reject_rows(
                "waveforms_records", man.frame.loc[[i]],
                f"{kind}: {site_id}/{delivery_id}/waveforms manifest row {int(row['_source_row'])} "
                f"({type(exc).__name__})",
            )
            keep.append(False)
            continue
        shift = deid_tables.shift_for(key, site_id, str(row["patient_id"]))
        base = rec.base_datetime + pd.Timedelta(days=shift) if rec.base_datetime is not None else None
        ids = known.get(str(row["patient_id"]), []) + [str(row["record"]), str(row.get("device_serial") or "")]
        write_record(
            rec, store, record_name=index.loc[i, "record_id"], base_datetime=base,
            comments=deidentify_wfdb_comments(rec.comments, [x for x in ids if x]),
        )
        keep.append(True)
    df = index[pd.Series(keep, index=index.index, dtype=bool)].reset_index(drop=True) if len(index) else index
    quarantine.write(["waveforms_manifest", "waveforms_records"])
    if present and len(man.frame):
        serials = man.frame["device_serial"] if "device_serial" in man.frame else pd.Series(dtype=object)
        deid_tables.write_crosswalk(ddir.parent, delivery_id, {"record": man.frame["record"], "device": serials},
                                    key=key, site_id=site_id, suffix="_waveforms")
    q = man.quarantined + (len(man.frame) - len(df))
    meta = output_metadata(df, received=man.received, quarantined=q, delivery_present=present)
    meta["records_by_device"] = dg.MetadataValue.json(df["device_kind"].value_counts().to_dict() if len(df) else {})
    meta["waveform_hours"] = float(df["duration_s"].sum() / 3600.0) if len(df) else 0.0
    yield from gate_then_output(["deid", "waveform_record"], df, suites.deid_waveform_record,
                                delivery_present=present, metadata=meta, output_name="result")
