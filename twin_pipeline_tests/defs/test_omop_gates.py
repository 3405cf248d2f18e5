"""`omop` gates in Dagster: a delivery below the mapping-coverage threshold blocks its downstream in
the same run; DQD-style checks are recorded per delivery with the site in their metadata."""

from __future__ import annotations

import shutil

import dagster as dg
import pandas as pd

from twin_pipeline.defs.build import all_assets
from twin_pipeline.defs.omop.assets import dqd_check_name
from twin_pipeline.defs.partitions import partition_key_for, site_delivery_partitions
from twin_pipeline.lib import dqd
from twin_pipeline.sources.landing import find_deliveries
from twin_pipeline_tests.conftest import make_resources
from twin_pipeline_tests.defs.test_site_delivery_materialize import _instance_with


@dg.asset(key=["probe", "after_conditions"], partitions_def=site_delivery_partitions,
          deps=[dg.AssetKey(["omop", "condition_occurrence"])], io_manager_key="probe_io")
def after_conditions() -> int:
    """Test-only downstream of omop/condition_occurrence."""
    return 1


def _assets():
    keep = []
    for a in all_assets():
        keys = {k.to_user_string() for k in a.keys}
        if a.partitions_def is None:
            continue  # omop/care_site is cross-delivery
        if any(k.startswith("omop/") for k in keys) or keys & {"deid/person", "deid/interview", "deid/waveform_record"}:
            keep.append(a)
    return keep + [after_conditions]


def _run(paths, tmp_path, delivery):
    resources = make_resources(paths, tmp_path)
    resources["probe_io"] = dg.InMemoryIOManager()
    return dg.materialize(_assets(), resources=resources, instance=_instance_with(find_deliveries(paths["landing"])),
                          partition_key=partition_key_for(delivery.site_id, delivery.delivery_id), raise_on_error=False)


def test_delivery_below_mapping_threshold_blocks_downstream(tiny_cohort, tmp_path):
    src = find_deliveries(tiny_cohort["landing"])[0]
    landing = tmp_path / "landing"
    shutil.copytree(src.path, landing / src.site_id / src.delivery_id)
    path = landing / src.site_id / src.delivery_id / "ehr" / "conditions.csv"
    cond = pd.read_csv(path, dtype=str, keep_default_na=False)
    n_bad = max(1, int(0.2 * len(cond)))  # 20 % of the rows get a SNOMED code no crosswalk knows
    cond.loc[cond.index[:n_bad], "CODE"] = "900000000000000"
    cond.to_csv(path, index=False)
    paths = dict(tiny_cohort, landing=landing)
    result = _run(paths, tmp_path, src)
    evals = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    cov = evals[("omop/condition_occurrence", "mapping_coverage")]
    assert cov.passed is False
    assert cov.metadata["coverage_conditions_snomed"].value < 0.95
    assert cov.metadata["site_id"].value == src.site_id
    counts = cov.metadata["rows_by_vocabulary"].value["conditions_snomed"]
    assert counts["unmapped"] == n_bad and counts["rows"] == len(cond)
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "omop/condition_occurrence" in materialized  # stored, with the unmapped rows visible
    assert "probe/after_conditions" not in materialized  # blocked downstream ...
    assert all(e.passed for (_, name), e in evals.items() if name != "mapping_coverage")  # ... by coverage alone
    # every DQD-style check ran for the delivery, grouped by category, with the site in its metadata
    dqd_evals = [e for (k, name), e in evals.items() if name.startswith("dqd_")]
    assert sorted(e.check_name for e in dqd_evals) == sorted(dqd_check_name(c) for c in dqd.CHECKS)
    assert all(e.metadata["site_id"].value == src.site_id for e in dqd_evals)
    assert {e.metadata["category"].value for e in dqd_evals} == set(dqd.CATEGORIES)
    assert all(e.passed for e in dqd_evals)  # generated data: no DQD finding
