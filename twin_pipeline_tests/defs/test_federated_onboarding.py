"""Site onboarding through the real sensors and jobs, then the optional privacy modes on that site.

A new site folder appears in landing → `landing_delivery_sensor` adds the site (and delivery) partitions
and requests the delivery run → on its success `federated_after_delivery` requests the site's
shareable-files run → on that success `twin_refresh_after_delivery` requests the refresh job, whose
selection holds the coordinator's pooled assets. Each requested run is executed in process against
a tmp warehouse; the refresh runs only its coordinator (pooled) part to stay fast.

On the onboarded site: DP off gives the same files as before DP existed; DP on charges the ledger,
withholds Labs/DailyCounts and refuses a release past the budget; homomorphic pooling equals the
plaintext total and lies within the obfuscated files' bounds.
"""

from __future__ import annotations

import json
import shutil

import dagster as dg
import duckdb
import pandas as pd
import pytest

from twin_pipeline.defs.build import all_assets, build_definitions
from twin_pipeline.defs.federated.assets import FederatedResource
from twin_pipeline.defs.ingest.sensors import (
    federated_after_delivery,
    landing_delivery_sensor,
    twin_refresh_after_delivery,
)
from twin_pipeline.defs.partitions import delivery_partitions, site_partitions
from twin_pipeline.lib import federated as fed
from twin_pipeline.sources.landing import find_deliveries, load_site_config
from twin_pipeline_tests.conftest import make_resources

pytestmark = pytest.mark.slow  # materializes real runs (one tiny site delivery: ~20–40 s)

POOLED = [["federated", "pooled_age_sex"], ["federated", "pooled_diag_proc_med"]]
SHAREABLE = [["federated", n] for n in ("site_age_sex", "site_diag_proc_med", "site_labs", "site_daily_counts")]


def _run_status_context(sensor, instance, result):
    return dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_success_event(),
    )


def _cohort_size(db, site: str) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "select count(distinct person_id) from omop.condition_occurrence "
            "where site_id = ? and phenotype_group = 'long_covid'", [site]).fetchone()[0]


@pytest.fixture(scope="module")
def onboarded(tiny_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("onboarding")
    landing = root / "landing"
    landing.mkdir()
    paths = {**tiny_cohort, "landing": landing}
    resources = make_resources(paths, root)
    defs = build_definitions(resources=resources)
    instance = dg.DagsterInstance.ephemeral()

    def evaluate(cursor=None):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"landing": resources["landing"]}) as c:
            return landing_delivery_sensor(c)

    steps = {"before": evaluate()}
    first = min(find_deliveries(tiny_cohort["landing"]), key=lambda d: (d.site_id, d.delivery_id))
    shutil.copytree(first.path, landing / first.site_id / first.delivery_id)  # the new site's folder appears
    sensed = evaluate()
    steps["sensed"] = sensed
    for req in sensed.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    (request,) = sensed.run_requests
    delivery_run = defs.resolve_job_def(landing_delivery_sensor.job_name).execute_in_process(
        partition_key=request.partition_key, tags=request.tags, instance=instance, raise_on_error=False)
    steps["delivery_run"] = delivery_run

    site_request = federated_after_delivery(_run_status_context(federated_after_delivery, instance, delivery_run))
    steps["site_request"] = site_request
    site_run = defs.resolve_job_def(federated_after_delivery.job_name).execute_in_process(
        partition_key=site_request.partition_key, instance=instance, raise_on_error=False)
    steps["site_run"] = site_run

    refresh_request = twin_refresh_after_delivery(_run_status_context(twin_refresh_after_delivery, instance, site_run))
    steps["refresh_request"] = refresh_request
    refresh_job = defs.resolve_job_def(twin_refresh_after_delivery.job_name)
    steps["pool_run"] = refresh_job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(k) for k in POOLED], raise_on_error=False)
    return {"site": first.site_id, "delivery": first.delivery_id, "steps": steps, "instance": instance,
            "resources": resources, "root": root, "paths": paths, "refresh_job": refresh_job}


def test_a_new_site_folder_is_onboarded_and_the_coordinator_refreshed(onboarded):
    steps, site = onboarded["steps"], onboarded["site"]
    assert isinstance(steps["before"], dg.SkipReason)  # empty landing: nothing to do
    added = {(r.partitions_def_name, tuple(r.partition_keys)) for r in steps["sensed"].dynamic_partitions_requests}
    assert (site_partitions.name, (site,)) in added and (delivery_partitions.name, (onboarded["delivery"],)) in added
    assert site in onboarded["instance"].get_dynamic_partitions(site_partitions.name)
    assert steps["delivery_run"].success
    assert steps["delivery_run"].dagster_run.tags.get("dagster/partition/site") == site
    assert isinstance(steps["site_request"], dg.RunRequest) and steps["site_request"].partition_key == site
    assert steps["site_run"].success
    assert all(e.passed for e in steps["site_run"].get_asset_check_evaluations())
    outbox = onboarded["root"] / "outbox" / site
    assert {p.name for p in outbox.glob("*.csv")} == {"AgeSex.csv", "DiagProcMed.csv", "Labs.csv", "DailyCounts.csv"}
    assert isinstance(steps["refresh_request"], dg.RunRequest)
    # the requested refresh job holds the coordinator assets, and they now include the new site
    assert {dg.AssetKey(k) for k in POOLED} <= set(onboarded["refresh_job"].asset_layer.executable_asset_keys)
    assert steps["pool_run"].success
    db = onboarded["root"] / "warehouse.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        total = con.execute("select pts_all, n_sites from federated.pooled_age_sex "
                            "where age_group = 'all' and sex = 'all'").fetchone()
    assert total == (_cohort_size(db, site), 1)


def test_dp_off_by_default_releases_the_files_as_before(onboarded):
    """Default resource = DP off: the outbox equals the plain obfuscation of the site's tables, no ledger."""
    site = onboarded["site"]
    assert FederatedResource(outbox_dir="x").dp_epsilon_value() is None
    meta = {e.materialization.asset_key.path[-1]: e.materialization.metadata
            for e in onboarded["steps"]["site_run"].get_asset_materialization_events()}
    assert all(m["dp_enabled"].value is False for m in meta.values()) and len(meta) == 4
    db = onboarded["root"] / "warehouse.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        t = {n: con.execute(f"select * from omop.{tb} where site_id = ?", [site]).df() for n, tb in
             [("person", "person"), ("condition", "condition_occurrence"), ("drug", "drug_exposure"),
              ("procedure", "procedure_occurrence")]}
    index = fed.cohort_index(t["condition"])
    threshold = load_site_config(onboarded["paths"]["sites"], site).small_cell_threshold
    outbox = onboarded["root"] / "outbox" / site
    expected = {
        "AgeSex": fed.site_age_sex(site, t["person"], index, t["procedure"]),
        "DiagProcMed": fed.site_diag_proc_med(site, index, t["condition"], t["drug"], t["procedure"]),
    }
    for file, raw in expected.items():
        released = pd.read_csv(outbox / f"{file}.csv")
        want = fed.obfuscate(raw, file, threshold)
        pd.testing.assert_frame_equal(released, want.astype(released.dtypes.to_dict()), check_exact=False)
    assert not (outbox / "dp_ledger.json").exists()


def test_dp_on_charges_the_ledger_and_refuses_a_release_past_the_budget(onboarded, tmp_path):
    site = onboarded["site"]
    shutil.copy(onboarded["root"] / "warehouse.duckdb", tmp_path / "warehouse.duckdb")  # keep the DP-off tables
    resources = make_resources(onboarded["paths"], tmp_path)
    resources["federated"] = FederatedResource(outbox_dir=str(tmp_path / "outbox"), dp_epsilon="1.0",
                                               dp_total_budget="1.5")
    assets = all_assets()
    ok = dg.materialize(assets, selection=dg.AssetSelection.keys(*SHAREABLE), resources=resources,
                        partition_key=site, instance=onboarded["instance"])
    assert ok.success and all(e.passed for e in ok.get_asset_check_evaluations())
    meta = {e.materialization.asset_key.path[-1]: {k: v.value for k, v in e.materialization.metadata.items()}
            for e in ok.get_asset_materialization_events()}
    assert meta["site_age_sex"]["dp_enabled"] is True
    assert meta["site_age_sex"]["dp_epsilon_spent"] == pytest.approx(1.0)
    assert meta["site_age_sex"]["dp_epsilon_remaining"] == pytest.approx(0.5)
    assert meta["site_age_sex"]["dp_noise_scale"] == pytest.approx(4.0)  # L1 2 / (ε/2)
    assert meta["site_diag_proc_med"]["dp_noise_scale"] == pytest.approx(32.0)  # 16 cells / (ε/2)
    assert meta["site_labs"]["dp_withheld"] is True and meta["site_labs"]["dagster/row_count"] == 0
    outbox = tmp_path / "outbox" / site
    assert len(pd.read_csv(outbox / "DailyCounts.csv")) == 0
    threshold = load_site_config(onboarded["paths"]["sites"], site).small_cell_threshold
    for file in ("AgeSex", "DiagProcMed"):
        assert fed.small_cells(pd.read_csv(outbox / f"{file}.csv"), file, threshold) == 0
    ledger = json.loads((outbox / "dp_ledger.json").read_text())
    assert [r["epsilon"] for r in ledger["releases"]] == [1.0]
    before = {f: (outbox / f"{f}.csv").read_bytes() for f in ("AgeSex", "DiagProcMed")}

    refused = dg.materialize(assets, selection=dg.AssetSelection.keys(*SHAREABLE), resources=resources,
                             partition_key=site, instance=onboarded["instance"], raise_on_error=False)
    assert not refused.success
    failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
    msg = failure.step_failure_data.error.message
    assert site in msg and "spent ε=1" in msg and "requests ε=1" in msg
    assert len(json.loads((outbox / "dp_ledger.json").read_text())["releases"]) == 1
    assert {f: (outbox / f"{f}.csv").read_bytes() for f in before} == before  # nothing new released


def test_homomorphic_pooling_equals_the_plaintext_total_within_obfuscated_bounds(onboarded, tmp_path):
    site = onboarded["site"]
    resources = dict(onboarded["resources"])
    resources["federated"] = FederatedResource(outbox_dir=resources["federated"].outbox_dir,
                                               he_key_dir=str(tmp_path / "keys"), he_key_bits=1024)
    assets = all_assets()
    enc = dg.materialize(assets, selection=dg.AssetSelection.keys(["federated", "site_encrypted_age_sex"]),
                         resources=resources, partition_key=site, instance=onboarded["instance"])
    assert enc.success and all(e.passed for e in enc.get_asset_check_evaluations())
    pooled = dg.materialize(assets, selection=dg.AssetSelection.keys(["federated", "he_pooled_age_sex"]),
                            resources=resources, instance=onboarded["instance"])
    assert pooled.success
    (check,) = pooled.get_asset_check_evaluations()
    assert check.check_name == "he_total_within_obfuscated_bounds" and check.passed
    db = onboarded["root"] / "warehouse.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        he_rows = con.execute("select * from federated.he_pooled_age_sex").df()
    assert int(he_rows.query("age_group == 'all' and sex == 'all'")["pts_all"].iloc[0]) == _cohort_size(db, site)
    # no key material anywhere but the key directory
    private = json.loads((tmp_path / "keys" / "private_key.json").read_text())
    text = json.dumps([{k: str(v.value) for k, v in e.materialization.metadata.items()}
                       for r in (enc, pooled) for e in r.get_asset_materialization_events()])
    text += (onboarded["root"] / "outbox" / site / "AgeSex.paillier.json").read_text()
    assert private["p"] not in text and private["q"] not in text


def test_refreshed_twins_trigger_site_effects_then_coordinator_pooling(onboarded):
    """After a twin refresh every site re-shares its effect estimates; pooling waits for the last one."""
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    from twin_pipeline.defs.ingest.sensors import federated_effects_after_refresh, federated_pool_after_effects
    from twin_pipeline.defs.jobs import federated_effects_job, federated_pool_job

    instance, site, pool_run = onboarded["instance"], onboarded["site"], onboarded["steps"]["pool_run"]
    requests = federated_effects_after_refresh(_run_status_context(federated_effects_after_refresh, instance, pool_run))
    assert [r.partition_key for r in requests] == [site]
    assert federated_effects_after_refresh.job_name == federated_effects_job.name
    assert federated_pool_after_effects.job_name == federated_pool_job.name

    # another site's effect run still running: the coordinator waits; once none is pending it pools
    instance.add_run(DagsterRun(job_name=federated_effects_job.name, run_id="running-effects-run",
                                status=DagsterRunStatus.STARTED))
    waiting = federated_pool_after_effects(_run_status_context(federated_pool_after_effects, instance, pool_run))
    assert isinstance(waiting, dg.SkipReason) and "pending" in waiting.skip_message
    instance.delete_run("running-effects-run")
    pool = federated_pool_after_effects(_run_status_context(federated_pool_after_effects, instance, pool_run))
    assert isinstance(pool, dg.RunRequest) and pool.run_key.startswith("pool-after-")
