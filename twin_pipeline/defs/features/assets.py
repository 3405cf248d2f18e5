"""`features` layer: per-record waveform features and per-interview scores."""


import os
from concurrent.futures import ProcessPoolExecutor

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from twin_pipeline.defs.gating import gate_results, gated_outputs, output_metadata
from twin_pipeline.defs.partitions import PARTITION_EXPR, WAREHOUSE_POOL, site_delivery_partitions
from twin_pipeline.lib.interviews import interview_scores
from twin_pipeline.lib.waveform import DEVICE_KINDS, feature_columns, record_features
from twin_pipeline.quality import suites
from twin_pipeline.sources.wfdb_io import WaveformReadError

FEATURE_SUITES = {
    "ecg_monitor": ("ecg_record_features", suites.features_ecg),
    "ventilator": ("ventilator_record_features", suites.features_ventilator),
    "wearable": ("wearable_record_features", suites.features_wearable),
}
DESCRIPTIONS = {
    "ecg_monitor": "One row per ECG record: R-peak count, heart rate, HRV (time domain), irregular-RR burden, quality.",
    "ventilator": "One row per ventilator record: breaths, RR, tidal volumes, I:E, PEEP, PIP, compliance, minute volume.",
    "wearable": "One row per wearable record: pulse rate and variability, resting HR, activity counts, sedentary time.",
}


class WaveformFeatureConfig(dg.Config):
    workers: int = Field(default=0, description="Processes for feature extraction (0 = one per core).")
    min_records_for_pool: int = Field(default=16, description="Below this, extract in-process.")


def _one(args: tuple[str, str]) -> dict:
    path, kind = args
    try:
        return record_features(path, kind)
    except WaveformReadError as exc:
        cols = feature_columns(kind)
        out = {c: np.nan for c in cols}
        out.update({"quality_flag": "no_signal", "quality_reason": f"unreadable: {type(exc).__name__}"})
        return out


def extract_all(paths_kinds: list[tuple[str, str]], workers: int, min_records_for_pool: int) -> list[dict]:
    if len(paths_kinds) < min_records_for_pool:
        return [_one(x) for x in paths_kinds]
    n = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=n) as pool:
        return list(pool.map(_one, paths_kinds, chunksize=8))


@dg.multi_asset(
    outs={
        dg.AssetKey(["features", table]).to_python_identifier(): dg.AssetOut(
            key=["features", table],
            group_name="features",
            description=DESCRIPTIONS[kind],
            kinds={"duckdb", "pandas", "numpy"},
            metadata={"partition_expr": PARTITION_EXPR},
        )
        for kind, (table, _) in FEATURE_SUITES.items()
    },
    partitions_def=site_delivery_partitions,
    ins={"records": dg.AssetIn(key=["deid", "waveform_record"])},
    check_specs=[s for _, (table, suite) in FEATURE_SUITES.items() for s in gated_outputs(["features", table], suite, site_delivery_partitions)],
    pool=WAREHOUSE_POOL,
    can_subset=False,
)
def waveform_features(context: dg.AssetExecutionContext, config: WaveformFeatureConfig, records: pd.DataFrame):
    """Extract features from each de-identified WFDB record (a bad window gives NaN plus a reason)."""
    jobs = [(str(p), str(k)) for p, k in zip(records["deid_path"], records["device_kind"])]
    rows = extract_all(jobs, config.workers, config.min_records_for_pool)
    feats = pd.DataFrame(rows, index=records.index) if rows else pd.DataFrame(index=records.index)
    base_cols = ["site_id", "delivery_id", "record_id", "person_id", "device_kind", "start_time", "duration_s"]
    for kind in DEVICE_KINDS:
        table, suite = FEATURE_SUITES[kind]
        mask = records["device_kind"] == kind
        cols = feature_columns(kind)
        part = feats.loc[mask].reindex(columns=cols)
        keep = [c for c in base_cols if c not in cols]
        df = pd.concat([records.loc[mask, keep], part], axis=1).reset_index(drop=True)
        for c in cols:
            if c.endswith(("_flag", "_reason")):
                df[c] = df[c].astype("string")
            else:
                df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
        meta = output_metadata(df)
        meta["records"] = len(df)
        if len(df):
            meta["quality_flags"] = dg.MetadataValue.json(df["quality_flag"].value_counts().to_dict())
            meta["processed_fraction"] = float((df["quality_flag"] != "no_signal").mean())
            # reason codes of the records that are not "ok" (aggregate counts of fixed codes, no rows)
            reasons = df.loc[df["quality_flag"] != "ok", "quality_reason"].fillna("").str.split(";").explode()
            reasons = reasons[reasons != ""].str.replace(r"x\d+$", "", regex=True)
            meta["not_ok_reasons"] = dg.MetadataValue.json(reasons.value_counts().head(20).to_dict())
        yield dg.Output(df, output_name=dg.AssetKey(["features", table]).to_python_identifier(), metadata=meta)
        yield from gate_results(["features", table], df, suite)


@dg.asset(
    key=["features", "interview_scores"],
    group_name="features",
    kinds={"duckdb", "pandas"},
    partitions_def=site_delivery_partitions,
    metadata={"partition_expr": PARTITION_EXPR},
    ins={"interviews": dg.AssetIn(key=["deid", "interview"])},
    check_specs=gated_outputs(["features", "interview_scores"], suites.features_interview_scores, site_delivery_partitions),
    pool=WAREHOUSE_POOL,
)
def interview_scores_asset(context: dg.AssetExecutionContext, interviews: pd.DataFrame):
    """One row per interview: coded answers and a 0–100 symptom burden score."""
    df = interview_scores(interviews)
    meta = output_metadata(df)
    if len(df):
        meta["mean_symptom_burden"] = float(df["symptom_burden"].mean())
    yield dg.Output(df, metadata=meta)
    yield from gate_results(["features", "interview_scores"], df, suites.features_interview_scores)
