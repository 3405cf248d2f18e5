"""The landing sensor adds new sites/deliveries as partitions and requests their runs, once."""

from __future__ import annotations

import json
import shutil

import dagster as dg

from twin_pipeline.defs.ingest.sensors import landing_delivery_sensor
from twin_pipeline.defs.partitions import delivery_partitions, site_partitions
from twin_pipeline.resources import LandingResource
from twin_pipeline.sources.landing import find_deliveries


def _evaluate(instance, landing, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"landing": landing}) as ctx:
        return landing_delivery_sensor(ctx)


def _landing(root, tmp_path):
    return LandingResource(landing_dir=str(root), quarantine_dir=str(tmp_path / "q"), sites_dir=str(tmp_path / "s"))


def test_sensor_adds_a_new_site_and_requests_only_its_runs(tiny_cohort, tmp_path):
    landing = tmp_path / "landing"
    existing = find_deliveries(tiny_cohort["landing"])
    first_site = existing[0].site_id
    for d in existing:
        if d.site_id == first_site:
            shutil.copytree(d.path, landing / d.site_id / d.delivery_id)
    instance = dg.DagsterInstance.ephemeral()
    result = _evaluate(instance, _landing(landing, tmp_path))
    assert isinstance(result, dg.SensorResult)
    keys = {(r.partition_key.keys_by_dimension["site"], r.partition_key.keys_by_dimension["delivery"])
            for r in result.run_requests}
    assert keys == {(d.site_id, d.delivery_id) for d in existing if d.site_id == first_site}
    added = {(req.partitions_def_name, tuple(req.partition_keys)) for req in result.dynamic_partitions_requests}
    assert (site_partitions.name, (first_site,)) in added
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    cursor = result.cursor

    # nothing new: skip
    again = _evaluate(instance, _landing(landing, tmp_path), cursor)
    assert isinstance(again, dg.SkipReason)

    # a new site appears, plus a half-copied delivery that must be ignored
    new = [d for d in existing if d.site_id != first_site][0]
    shutil.copytree(new.path, landing / "hospital_z" / new.delivery_id)
    (landing / "hospital_z" / "2031-01-01").mkdir()
    third = _evaluate(instance, _landing(landing, tmp_path), cursor)
    assert [r.run_key for r in third.run_requests] == [f"hospital_z/{new.delivery_id}"]
    assert [(r.partitions_def_name, list(r.partition_keys)) for r in third.dynamic_partitions_requests] == [
        (site_partitions.name, ["hospital_z"])
    ]
    assert f"hospital_z/{new.delivery_id}" in json.loads(third.cursor)
    assert delivery_partitions.name not in {r.partitions_def_name for r in third.dynamic_partitions_requests}


def test_sensor_skips_deliveries_that_already_landed_outside_the_sensor(tiny_cohort, tmp_path):
    """`make demo` / `twin-pipeline backfill` land deliveries without the sensor: a fresh sensor cursor must
    not request them again, only the delivery that has not landed."""
    from twin_pipeline.defs.ingest.sensors import LANDED_MARKER
    from twin_pipeline.defs.partitions import partition_key_for

    deliveries = find_deliveries(tiny_cohort["landing"])
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(site_partitions.name, sorted({d.site_id for d in deliveries}))
    instance.add_dynamic_partitions(delivery_partitions.name, sorted({d.delivery_id for d in deliveries}))
    landed, pending = deliveries[:-1], deliveries[-1]
    for d in landed:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(LANDED_MARKER, partition=str(partition_key_for(d.site_id, d.delivery_id)))
        )
    result = _evaluate(instance, _landing(tiny_cohort["landing"], tmp_path))
    assert [r.run_key for r in result.run_requests] == [f"{pending.site_id}/{pending.delivery_id}"]
    assert result.dynamic_partitions_requests == []
