"""Partitioned materialization of two generated sites with `dg.materialize`, quarantine accounting,
and a failed blocking gate stopping its downstream in the same run."""

from __future__ import annotations

import shutil

import dagster as dg
import duckdb
import pandas as pd
import pytest

from twin_pipeline.defs.build import all_assets
from twin_pipeline.defs.partitions import delivery_partitions, partition_key_for, site_partitions
from twin_pipeline.sources.landing import find_deliveries
from twin_pipeline_tests.conftest import make_resources

PARTITIONED_GROUPS = {"deid", "omop", "features"}


def partitioned_assets():
    return [a for a in all_assets()
            if next(iter(a.keys)).path[0] in PARTITIONED_GROUPS and a.partitions_def is not None]


def _instance_with(deliveries) -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(site_partitions.name, sorted({d.site_id for d in deliveries}))
    instance.add_dynamic_partitions(delivery_partitions.name, sorted({d.delivery_id for d in deliveries}))
    return instance


def _materialize(instance, resources, site, delivery, raise_on_error=True):
    return dg.materialize(
        partitioned_assets(),
        resources=resources,
        partition_key=partition_key_for(site, delivery),
        instance=instance,
        raise_on_error=raise_on_error,
    )


def test_two_sites_materialize_with_every_check_passing(tiny_cohort, tmp_path):
    deliveries = find_deliveries(tiny_cohort["landing"])
    assert len({d.site_id for d in deliveries}) == 2
    first = [d for d in deliveries if d.delivery_id == min(x.delivery_id for x in deliveries)]
    instance = _instance_with(deliveries)
    resources = make_resources(tiny_cohort, tmp_path)
    for d in first:
        result = _materialize(instance, resources, d.site_id, d.delivery_id)
        assert result.success
        evals = result.get_asset_check_evaluations()
        assert evals and all(e.passed for e in evals), [e.check_name for e in evals if not e.passed]
        mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
        assert {"deid/person", "omop/measurement", "features/ecg_record_features"} <= set(mats)
        for key in ("deid/person", "deid/observation", "deid/interview", "deid/waveform_record"):
            meta = mats[key].materialization.metadata
            assert meta["received"].value == meta["loaded"].value + meta["quarantined"].value, key
            assert meta["accounted"].value is True
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    sites = con.execute("select distinct site_id from omop.person order by 1").fetchall()
    assert [s[0] for s in sites] == sorted({d.site_id for d in first})
    # nothing raw crossed the boundary: ids are pseudonyms, no raw local ids in any deid table
    raw_ids = set()
    for d in first:
        raw_ids |= set(pd.read_csv(d.path / "ehr" / "patients.csv", dtype=str)["Id"])
    persons = {r[0] for r in con.execute("select person_id from deid.person").fetchall()}
    assert persons and not (persons & raw_ids)
    assert all(p.startswith("P") and len(p) == 17 for p in persons)
    con.close()


def test_quarantine_counts_with_planted_bad_rows(tiny_cohort, tmp_path):
    from twin_pipeline.synth.generator import plant_bad_rows

    src = find_deliveries(tiny_cohort["landing"])[0]
    landing = tmp_path / "landing"
    target = landing / src.site_id / src.delivery_id
    shutil.copytree(src.path, target)
    planted = plant_bad_rows(target, seed=1)
    paths = dict(tiny_cohort, landing=landing)
    instance = _instance_with(find_deliveries(landing))
    resources = make_resources(paths, tmp_path)
    result = _materialize(instance, resources, src.site_id, src.delivery_id, raise_on_error=False)
    mats = {m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()}
    quarantined = sum(mats[k]["quarantined"].value for k in mats if "quarantined" in mats[k])
    assert planted and quarantined == sum(planted.values()), (planted, quarantined)
    qdir = tmp_path / "quarantine" / src.site_id / src.delivery_id
    files = {p.name for p in qdir.glob("*.csv")}
    assert any(f.startswith("ehr_observations") for f in files)
    rej = pd.read_csv(qdir / "ehr_observations.csv")
    assert rej["_reason"].str.contains(f"{src.site_id}/{src.delivery_id}").all()
    for key, meta in mats.items():
        if "received" in meta:
            assert meta["received"].value == meta["loaded"].value + meta["quarantined"].value, key


def test_failed_blocking_gate_stops_downstream_in_the_same_run(tiny_cohort, tmp_path):
    src = find_deliveries(tiny_cohort["landing"])[0]
    landing = tmp_path / "landing"
    target = landing / src.site_id / src.delivery_id
    shutil.copytree(src.path, target)
    manifest = pd.read_csv(target / "waveforms" / "manifest.csv", dtype=str)
    assert len(manifest) > 0
    manifest.loc[manifest.index[0], "sampling_rate_hz"] = "0"  # violates the deid.waveform_record contract
    manifest.to_csv(target / "waveforms" / "manifest.csv", index=False)
    paths = dict(tiny_cohort, landing=landing)
    instance = _instance_with(find_deliveries(landing))
    result = _materialize(instance, make_resources(paths, tmp_path), src.site_id, src.delivery_id,
                          raise_on_error=False)
    evals = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    assert evals["deid/waveform_record"].passed is False
    meta = evals["deid/waveform_record"].metadata
    assert "sampling_rate_hz" in str(meta)
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "deid/waveform_record" not in materialized  # privacy boundary: a failing frame is not stored
    assert "features/ecg_record_features" not in materialized  # blocked downstream
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    con.close()
    assert "waveform_record" not in tables and "person" in tables
    assert "features/interview_scores" in materialized  # unrelated branch still ran
    assert not result.success


def test_partition_without_a_delivery_is_empty_and_a_half_copied_one_fails(tiny_cohort, tmp_path):
    deliveries = find_deliveries(tiny_cohort["landing"])
    instance = _instance_with(deliveries)
    instance.add_dynamic_partitions(delivery_partitions.name, ["2030-01-01"])
    resources = make_resources(tiny_cohort, tmp_path)
    site = deliveries[0].site_id
    result = _materialize(instance, resources, site, "2030-01-01")
    meta = {m.asset_key.to_user_string(): m.materialization.metadata for m in result.get_asset_materialization_events()}
    assert meta["deid/person"]["delivery_present"].value is False
    assert meta["deid/person"]["dagster/row_count"].value == 0

    half = tiny_cohort["landing"].parent / "half_landing"
    (half / site / "2030-01-01" / "ehr").mkdir(parents=True)
    paths = dict(tiny_cohort, landing=half)
    result = _materialize(instance, make_resources(paths, tmp_path / "h"), site, "2030-01-01", raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures and "_READY" in str(failures[0].event_specific_data.error)


@pytest.mark.parametrize("bad_secret,match", [("", "empty"), ("demo-only-abcdefghijklmnop", "TWIN_DEMO_MODE")])
def test_missing_or_demo_secret_is_a_clear_error(tiny_cohort, tmp_path, bad_secret, match):
    from twin_pipeline.resources import DeidResource

    deliveries = find_deliveries(tiny_cohort["landing"])
    instance = _instance_with(deliveries)
    resources = make_resources(tiny_cohort, tmp_path)
    resources["deid"] = DeidResource(secret=bad_secret)
    d = deliveries[0]
    result = _materialize(instance, resources, d.site_id, d.delivery_id, raise_on_error=False)
    assert not result.success
    errors = " ".join(str(e.event_specific_data.error) for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert match in errors
    assert bad_secret == "" or bad_secret not in errors
