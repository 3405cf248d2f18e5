"""MLflow logging of an effect model: round trip through pyfunc, registry alias, and no identifiers logged."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from twin_pipeline.lib.effects import ARMS, fit_t_learner
from twin_pipeline.lib.mlflow_tracking import (
    flatten_metrics,
    flatten_params,
    log_effect_model_run,
    median_input_example,
    use_tracking_uri,
)
from twin_pipeline_tests.lib.test_effects import FEATURES, make_confounded_twins

PLANTED_PERSON = "PSEUDONYM-PLANTED-7Q4Z"
PLANTED_SITE = "SITE-LOCAL-ID-93XK"
SOURCE = "duckdb:///data/warehouse/twins.duckdb#twin.patient_twin"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    df, _ = make_confounded_twins(500, seed=21)
    df.loc[df.index[7], "person_id"] = PLANTED_PERSON
    df.loc[df.index[7], "site_id"] = PLANTED_SITE
    df["local_record_id"] = [f"{PLANTED_SITE}-{i}" for i in range(len(df))]
    model, diag = fit_t_learner(df, FEATURES, n_folds=3)
    uri = f"sqlite:///{root}/mlflow.db"
    before = mlflow.get_tracking_uri()
    result = log_effect_model_run(
        tracking_uri=uri,
        experiment="twin_effects_test",
        run_name="t_learner_site_a",
        model=model,
        params={"n_models": 1, "cohort": "test"},
        metrics=diag,
        tags={
            "dagster_run_id": "run-123",
            "asset_key": "ml/effect_model",
            "partition": "site_a",
            "git_commit": "abc",
        },
        input_example=df,  # a frame of patients: only its medians may be logged
        dataset_df=df,  # with identifier columns: only model columns may be logged
        dataset_source=SOURCE,
        registered_model_name="twin_effect_model",
        registered_model_alias="candidate",
        artifact_location=str(root / "artifacts"),
    )
    return {"root": root, "uri": uri, "df": df, "model": model, "diag": diag, "result": result, "before": before}


def test_result_and_global_state(logged):
    r = logged["result"]
    assert set(r) == {"run_id", "model_uri", "model_id", "experiment_id", "registered_version"}
    assert r["registered_version"] == 1
    assert mlflow.get_tracking_uri() == logged["before"]  # the caller's tracking URI is restored


def test_logged_model_loads_and_predicts_like_memory(logged):
    df, model = logged["df"], logged["model"]
    expected = model.predict_outcomes(df)
    X = df[FEATURES]  # sex_male is int64 here; the signature says double
    with use_tracking_uri(logged["uri"]):
        loaded = mlflow.pyfunc.load_model(logged["result"]["model_uri"])
        by_alias = mlflow.pyfunc.load_model("models:/twin_effect_model@candidate")
    pred = loaded.predict(X)
    assert list(pred.columns) == list(ARMS)
    np.testing.assert_allclose(pred.to_numpy(), expected)
    np.testing.assert_allclose(by_alias.predict(X).to_numpy(), expected)
    sig = loaded.metadata.get_input_schema().input_names()
    assert sig == FEATURES


def test_params_metrics_tags_and_dataset(logged):
    client = MlflowClient(tracking_uri=logged["uri"])
    run = client.get_run(logged["result"]["run_id"])
    diag = logged["diag"]
    assert run.data.metrics["dr_ate_colchicine"] == pytest.approx(diag["dr_ate_colchicine"])
    assert run.data.metrics["n_outside_overlap"] == diag["n_outside_overlap"]
    assert run.data.params["reference_arm"] == "standard_care"
    assert run.data.params["outcome_params.max_iter"] == "100"
    assert run.data.params["cohort"] == "test"
    assert run.data.tags["dagster_run_id"] == "run-123"
    assert run.data.tags["partition"] == "site_a"
    (inp,) = run.inputs.dataset_inputs
    ds = inp.dataset
    schema_cols = [c["name"] for c in json.loads(ds.schema)["mlflow_colspec"]]
    assert schema_cols == FEATURES + ["therapy", "outcome_6mwd_90d_m"]
    assert json.loads(ds.source)["uri"] == SOURCE
    assert len(ds.digest) > 0
    assert json.loads(ds.profile)["num_rows"] == len(logged["df"])
    assert {t.key: t.value for t in inp.tags}.get("mlflow.data.context") == "training"
    reg = client.get_model_version_by_alias("twin_effect_model", "candidate")
    assert int(reg.version) == 1


def test_no_identifier_reaches_the_tracking_store_or_artifacts(logged):
    root: Path = logged["root"]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "MLmodel" for p in files)  # the scan does cover the model artifacts
    assert any(p.suffix == ".db" for p in files)
    for p in files:
        blob = p.read_bytes()
        for planted in (PLANTED_PERSON, PLANTED_SITE, logged["df"]["person_id"].iloc[0]):
            assert planted.encode() not in blob, p.name


def test_input_example_is_the_median_row(logged):
    root: Path = logged["root"]
    (example_file,) = root.rglob("input_example.json")
    ex = json.loads(example_file.read_text())
    assert ex["columns"] == FEATURES
    medians = logged["df"][FEATURES].median().to_numpy()
    np.testing.assert_allclose(ex["data"][0], medians)


def test_helpers_refuse_bad_input(logged):
    with pytest.raises(TypeError, match="note"):
        flatten_metrics({"ok": 1.0, "note": "text"})
    assert flatten_metrics({"a": {"b": 2, "c": True}}) == {"a_b": 2.0, "a_c": 1.0}
    assert flatten_params({"x": {"y": [1, 2]}}) == {"x.y": "1,2"}
    with pytest.raises(ValueError, match="at least"):
        median_input_example(logged["df"].iloc[:3], FEATURES)
    with pytest.raises(ValueError, match="identifier"):
        model = logged["model"]
        bad = type(model)(**{**model.__dict__, "feature_cols": FEATURES + ["person_id"]})
        log_effect_model_run(
            tracking_uri=logged["uri"],
            experiment="twin_effects_test",
            run_name="bad",
            model=bad,
            params={},
            metrics={},
            tags={},
            input_example=logged["df"],
            dataset_df=None,
            dataset_source=SOURCE,
        )


def test_champion_decision_rule():
    from twin_pipeline.lib.mlflow_tracking import champion_decision

    assert champion_decision(10.0, None) and champion_decision(10.0, float("nan"))
    assert champion_decision(9.0, 10.0)
    assert not champion_decision(10.0, 10.0)  # a tie keeps the champion
    assert not champion_decision(11.0, 10.0)
    assert not champion_decision(9.5, 10.0, min_improvement=1.0)
    assert not champion_decision(float("nan"), None)


def test_gate_refuses_a_worse_challenger_and_promotes_a_better_one(logged):
    from twin_pipeline.lib.mlflow_tracking import alias_version, register_and_gate

    uri, model_uri = logged["uri"], logged["result"]["model_uri"]
    name = "gate_test_model"
    first = register_and_gate(tracking_uri=uri, name=name, model_uri=model_uri, challenger_metric=100.0,
                              champion_metric=None)
    assert first["promoted"] and first["alias"] == "champion" and first["previous_champion_version"] is None
    worse = register_and_gate(tracking_uri=uri, name=name, model_uri=model_uri, challenger_metric=120.0,
                              champion_metric=100.0)
    assert not worse["promoted"] and worse["alias"] == "challenger"
    champ = alias_version(uri, name, "champion")
    assert champ["version"] == first["version"]  # the champion alias did not move
    assert champ["run_id"] == logged["result"]["run_id"]
    assert alias_version(uri, name, "challenger")["version"] == worse["version"]
    better = register_and_gate(tracking_uri=uri, name=name, model_uri=model_uri, challenger_metric=90.0,
                               champion_metric=100.0)
    assert better["promoted"] and alias_version(uri, name, "champion")["version"] == better["version"]
    assert alias_version(uri, "no_such_model", "champion") is None
