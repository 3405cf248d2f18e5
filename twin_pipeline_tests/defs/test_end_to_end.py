"""End to end on a small generated cohort: every partition, then twins, models (MLflow) and evaluation."""

from __future__ import annotations

import dagster as dg
import duckdb
import mlflow
import pandas as pd
import pytest

from twin_pipeline.defs.build import all_assets
from twin_pipeline_tests.conftest import make_resources, materialize_site_deliveries

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from twin_pipeline.synth.generator import generate_cohort

    root = tmp_path_factory.mktemp("e2e")
    paths = {"landing": root / "landing", "truth": root / "truth", "sites": root / "sites", "root": root}
    generate_cohort(paths["landing"], sites=2, patients=70, seed=11, truth_dir=paths["truth"],
                    sites_dir=paths["sites"], deliveries=2,
                    waveform_seconds={"ecg_monitor": 20, "ventilator": 30, "wearable": 60})
    work = root / "work"
    work.mkdir()
    resources = make_resources(paths, work)
    instance = dg.DagsterInstance.ephemeral()
    deliveries = materialize_site_deliveries(paths["landing"], resources, instance)
    assets = all_assets()
    result = dg.materialize(assets, selection=dg.AssetSelection.groups("twin", "ml")
                            | dg.AssetSelection.keys(["omop", "care_site"]), resources=resources,
                            instance=instance)
    return {"result": result, "work": work, "paths": paths, "deliveries": deliveries, "resources": resources,
            "instance": instance}


def test_twins_models_and_simulations_are_built_with_checks_passing(built):
    result = built["result"]
    assert result.success
    evals = result.get_asset_check_evaluations()
    assert {e.asset_key.to_user_string() for e in evals} >= {
        "twin/patient_twin", "ml/treatment_effect_model", "ml/treatment_simulation", "ml/effect_evaluation"}
    assert all(e.passed for e in evals)
    con = duckdb.connect(str(built["work"] / "warehouse.duckdb"), read_only=True)
    n_persons = con.execute("select count(distinct site_id || person_id) from omop.person").fetchone()[0]
    n_twins, n_versions = con.execute(
        "select count(*), count(distinct twin_version) from twin.patient_twin").fetchone()
    assert n_twins == n_persons and n_versions == 1
    n_sim, n_arms = con.execute(
        "select count(*), count(distinct therapy) from ml.treatment_simulation").fetchone()
    assert n_arms == 4 and n_sim == 4 * n_twins
    per_twin = con.execute(
        "select max(abs(s - 1)) from (select sum(prob_best) s from ml.treatment_simulation group by person_id)"
    ).fetchone()[0]
    assert per_twin < 1e-6
    # OMOP device_exposure indexes every de-identified recording; care_site has one row per site
    assert con.execute("select count(*) from omop.device_exposure").fetchone()[0] == con.execute(
        "select count(*) from deid.waveform_record").fetchone()[0] > 0
    assert con.execute("select count(*) from omop.care_site").fetchone()[0] == len({d.site_id for d in built["deliveries"]})
    # the deliveries' incremental rows reached the twins: patients seen in two deliveries exist
    assert con.execute("select max(n_deliveries) from twin.patient_twin").fetchone()[0] == 2
    con.close()


def test_model_is_in_mlflow_with_dagster_tags_and_loads_back(built):
    res = built["resources"]["mlflow"]
    client = mlflow.MlflowClient(tracking_uri=res.tracking_uri)
    exp = client.get_experiment_by_name(res.experiment_name)
    runs = client.search_runs([exp.experiment_id])
    con = duckdb.connect(str(built["work"] / "warehouse.duckdb"), read_only=True)
    run_ids = {r[0] for r in con.execute("select mlflow_run_id from ml.treatment_effect_model").fetchall()}
    con.close()
    assert len(runs) == len(run_ids) >= 1 and {r.info.run_id for r in runs} == run_ids  # one run per estimator
    run = runs[0]
    assert run.data.tags["dagster.asset_key"] == "ml/treatment_effect_model"
    assert run.data.tags["dagster.run_id"] == built["result"].run_id
    assert any(k.startswith("truth.") for k in run.data.metrics)  # evaluation logged back onto the run
    mats = {m.asset_key.to_user_string(): m.materialization.metadata
            for m in built["result"].get_asset_materialization_events()}
    assert mats["ml/treatment_simulation"]["n_simulations"].value > 0
    assert mats["ml/treatment_simulation"]["n_simulations"].value >= 4 * len(run_ids)


def test_federated_shareable_files_are_obfuscated_and_pooled(built):
    from twin_pipeline.lib import federated as fed
    from twin_pipeline.sources.landing import load_site_config

    resources = built["resources"]
    instance = built["instance"]
    assets = all_assets()
    sites = sorted({d.site_id for d in built["deliveries"]})
    shareable = dg.AssetSelection.keys(*[["federated", n] for n in
                                         ("site_age_sex", "site_diag_proc_med", "site_labs", "site_daily_counts")])
    for site in sites:
        res = dg.materialize(assets, selection=shareable, resources=resources, partition_key=site, instance=instance)
        assert res.success and all(e.passed for e in res.get_asset_check_evaluations())
    pooled = dg.materialize(
        assets, selection=dg.AssetSelection.keys(["federated", "pooled_age_sex"], ["federated", "pooled_diag_proc_med"]),
        resources=resources, instance=instance,
    )
    assert pooled.success
    outbox = built["work"] / "outbox"
    for site in sites:
        threshold = load_site_config(built["paths"]["sites"], site).small_cell_threshold
        for file in ("AgeSex", "DiagProcMed", "Labs", "DailyCounts"):
            df = pd.read_csv(outbox / site / f"{file}.csv")
            assert fed.small_cells(df, file, threshold) == 0, (site, file)
            assert "person_id" not in df.columns and set(df["siteid"]) <= {site}
    con = duckdb.connect(str(built["work"] / "warehouse.duckdb"), read_only=True)
    total = con.execute(
        "select pts_all from federated.pooled_age_sex where age_group='all' and sex='all'").fetchone()[0]
    n_cohort = con.execute(
        "select count(distinct site_id || person_id) from omop.condition_occurrence where phenotype_group='long_covid'"
    ).fetchone()[0]
    con.close()
    assert total == n_cohort  # site totals are far above any threshold, so pooling is exact here


def test_federated_effect_estimates_are_pooled_without_patient_rows(built):
    resources, instance, assets = built["resources"], built["instance"], all_assets()
    sites = sorted({d.site_id for d in built["deliveries"]})
    for site in sites:
        res = dg.materialize(assets, selection=dg.AssetSelection.keys(["federated", "site_effect_estimates"]),
                             resources=resources, partition_key=site, instance=instance)
        assert res.success and all(e.passed for e in res.get_asset_check_evaluations())
        meta = res.get_asset_materialization_events()[0].materialization.metadata
        # a site releases estimates exactly when every arm has enough twins; never partial garbage
        assert (meta["arms_released"].value == 3) == meta["estimable"].value
    res = dg.materialize(assets, selection=dg.AssetSelection.keys(["federated", "pooled_effects"]),
                         resources=resources, instance=instance)
    assert res.success
    con = duckdb.connect(str(built["work"] / "warehouse.duckdb"), read_only=True)
    site_rows = con.execute("select * from federated.site_effect_estimates").df()
    pooled = con.execute("select * from federated.pooled_effects").df()
    con.close()
    assert set(site_rows.columns) == {"siteid", "therapy", "subgroup", "n", "estimate", "se"}
    assert (site_rows["se"] > 0).all()
    assert len(pooled) == site_rows[["therapy", "subgroup"]].drop_duplicates().shape[0]
    assert ((pooled["random_se"] >= pooled["fixed_se"] - 1e-9) | (pooled["n_sites"] < 2)).all()
