"""The Definitions object: layers, checks on every asset, jobs, sensors, schedule."""

from __future__ import annotations

import dagster as dg

from twin_pipeline.defs.build import build_definitions

LAYERS = {"deid", "omop", "features", "twin", "ml", "federated", "privacy"}


def _defs() -> dg.Definitions:
    return build_definitions(resources={})


def test_every_asset_has_a_layer_prefix_group_docstring_and_a_blocking_check():
    defs = _defs()
    graph = defs.resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    assert len(keys) >= 20
    blocking = {ck.asset_key for ck in graph.asset_check_keys if graph.get_check_spec(ck).blocking}
    for key in keys:
        node = graph.get(key)
        assert key.path[0] in LAYERS, key
        assert node.group_name == key.path[0], key
        assert node.description and len(node.description) > 20, key
        assert key in blocking, f"{key} has no blocking check"


def test_per_site_layers_are_site_by_delivery_partitioned_and_cross_site_layers_are_not():
    graph = _defs().resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        pdef = graph.get(key).partitions_def
        if key.path[0] in {"deid", "omop", "features"} and key.path != ["omop", "care_site"]:
            assert isinstance(pdef, dg.MultiPartitionsDefinition), key
            assert {d.name for d in pdef.partitions_defs} == {"site", "delivery"}
        elif key.path[0] == "federated" and key.path[1].startswith("site_"):
            assert isinstance(pdef, dg.DynamicPartitionsDefinition) and pdef.name == "site", key
        else:
            assert pdef is None, key


def test_jobs_sensors_schedule_present():
    defs = _defs()
    assert defs.resolve_job_def("site_delivery_job") is not None
    assert defs.resolve_job_def("twin_refresh_job") is not None
    names = {s.name for s in defs.sensors}
    assert {"landing_delivery_sensor", "federated_after_delivery", "twin_refresh_after_delivery",
            "run_failure_report"} <= names
    assert {s.name for s in defs.schedules} == {"nightly_twin_refresh"}


def test_no_asset_reads_ground_truth_except_the_evaluation_asset():
    graph = _defs().resolve_asset_graph()
    users = set()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if "ground_truth" in node.assets_def.required_resource_keys:
            users.add(key.to_user_string())
    assert users == {"ml/effect_evaluation"}


def test_no_coordinator_asset_depends_on_a_patient_level_asset():
    """Federated split: coordinator assets read only the sites' shareable (obfuscated) outputs."""
    graph = _defs().resolve_asset_graph()
    shareable = {k for k in graph.get_all_asset_keys() if k.path[0] == "federated" and k.path[1].startswith("site_")}
    coordinator = {k for k in graph.get_all_asset_keys() if k.path[0] == "federated" and k not in shareable}
    assert shareable and coordinator
    for key in coordinator:
        upstream = graph.get(key).parent_keys
        assert upstream and upstream <= shareable, (key, upstream - shareable)
    for key in shareable:  # shareable outputs come from the site's de-identified layers only
        assert {p.path[0] for p in graph.get(key).parent_keys} <= {"omop", "twin"}, key
