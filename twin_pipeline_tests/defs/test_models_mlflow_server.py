"""Model assets against a real `mlflow server` (sqlite backend, artifacts in tmp), read back over REST.

The twin table comes from the generator straight (``effects.generator_twins``) through a stand-in
``twin/patient_twin`` asset, so only the `ml` assets are under test here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import requests

from twin_pipeline.defs.models.assets import CHAMPION_GATE, champion_model, effect_evaluation, treatment_models
from twin_pipeline.lib import effects
from twin_pipeline_tests.conftest import make_resources

pytestmark = pytest.mark.slow

RUN_CONFIG = {"ops": {"treatment_models": {"config": {"n_folds": 2, "n_ensemble": 2, "n_draws": 20, "seed": 3}}}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen(
        [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--default-artifact-root", str(root / "artifacts")],
        stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start; see {root / 'server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group: gunicorn/uvicorn workers too
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _twins() -> pd.DataFrame:
    df, _ = effects.generator_twins(300, seed=5)
    df["twin_version"] = "v-test-0001"
    return df


@dg.asset(key=["twin", "patient_twin"], group_name="twin")
def stand_in_twins() -> pd.DataFrame:
    """Generator twins in the model-facing shape (stand-in for the twin layer)."""
    return _twins()


@pytest.fixture(scope="module")
def materialized(server, tmp_path_factory):
    work = tmp_path_factory.mktemp("models_work")
    resources = make_resources({"landing": work / "none", "sites": work / "none", "truth": work / "no_truth"}, work)
    from twin_pipeline.resources import MlflowResource

    resources["mlflow"] = MlflowResource(tracking_uri=server, experiment_name="twin_pipeline/test_effects",
                                         registered_model_name="twin_test_effect")
    assets = [stand_in_twins, treatment_models, champion_model, effect_evaluation]
    first = dg.materialize(assets, resources=resources, run_config=RUN_CONFIG)
    second = dg.materialize(assets, resources=resources, run_config=RUN_CONFIG, raise_on_error=False)
    return {"first": first, "second": second, "url": server, "resources": resources}


def _api(url: str, path: str, method: str = "get", **kw) -> dict:
    r = getattr(requests, method)(f"{url}/api/2.0/mlflow/{path}", timeout=30, **kw)
    r.raise_for_status()
    return r.json()


def test_one_run_per_estimator_with_consistent_names_over_rest(materialized):
    url = materialized["url"]
    assert materialized["first"].success
    exp = _api(url, "experiments/get-by-name", params={"experiment_name": "twin_pipeline/test_effects"})
    runs = _api(url, "runs/search", "post", json={"experiment_ids": [exp["experiment"]["experiment_id"]],
                                                  "max_results": 100})["runs"]
    first_id = materialized["first"].run_id
    runs = [r for r in runs if {t["key"]: t["value"] for t in r["data"]["tags"]}.get("dagster.run_id") == first_id]
    by_est = {}
    for r in runs:
        tags = {t["key"]: t["value"] for t in r["data"]["tags"]}
        assert tags["dagster.asset_key"] == "ml/treatment_effect_model"
        assert tags["git.commit"] and tags["twin_version"] == "v-test-0001" and "dagster.partition" in tags
        by_est[tags["estimator"]] = r
    assert set(by_est) == set(effects.ESTIMATORS)
    metric_names = [{m["key"] for m in r["data"]["metrics"]} for r in by_est.values()]
    param_names = [{p["key"] for p in r["data"]["params"]} for r in by_est.values()]
    assert metric_names[0] == metric_names[1] == metric_names[2]  # runs line up in the compare view
    assert param_names[0] == param_names[1] == param_names[2]
    assert {"val_tau_risk", "dr_policy_value_model", "n_outside_overlap", "val_qini_colchicine"} <= metric_names[0]
    arts = _api(url, "artifacts/list", params={"run_id": by_est["t_learner"]["info"]["run_id"], "path": "plots"})
    assert {Path(f["path"]).name for f in arts["files"]} == {
        "qini.png", "calibration.png", "effect_distribution.png", "feature_importance.png"}


def test_champion_alias_points_at_the_best_run(materialized):
    url = materialized["url"]
    mv = _api(url, "registered-models/alias", params={"name": "twin_test_effect", "alias": "champion"})
    assert mv["model_version"]["version"] == "1"
    run = _api(url, "runs/get", params={"run_id": mv["model_version"]["run_id"]})["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["best_estimator"] == "true"
    mats = {m.asset_key.to_user_string(): m.materialization.metadata
            for m in materialized["first"].get_asset_materialization_events()}
    assert mats["ml/champion_model"]["alias"].value == "champion"
    assert mats["ml/treatment_effect_model"]["best_estimator"].value == tags["estimator"]
    assert mats["ml/treatment_simulation"]["n_simulations"].value == 300 * 4 * 2
    gate = [e for e in materialized["first"].get_asset_check_evaluations() if e.check_name == CHAMPION_GATE]
    assert len(gate) == 1 and gate[0].passed


def test_gate_refuses_a_challenger_that_does_not_beat_the_champion(materialized):
    """Same twin version again: the new best ties the champion, so it is refused and kept as challenger."""
    url, second = materialized["url"], materialized["second"]
    gate = [e for e in second.get_asset_check_evaluations() if e.check_name == CHAMPION_GATE]
    assert len(gate) == 1 and not gate[0].passed
    champ = _api(url, "registered-models/alias", params={"name": "twin_test_effect", "alias": "champion"})
    chall = _api(url, "registered-models/alias", params={"name": "twin_test_effect", "alias": "challenger"})
    assert champ["model_version"]["version"] == "1" and chall["model_version"]["version"] == "2"
    tags = {t["key"]: t["value"] for t in chall["model_version"]["tags"]}
    assert tags["gate.decision"] == "refused"


def test_evaluation_without_ground_truth_reports_the_estimable_part(materialized):
    mats = {m.asset_key.to_user_string(): m.materialization.metadata
            for m in materialized["first"].get_asset_materialization_events()}
    meta = mats["ml/effect_evaluation"]
    assert meta["has_ground_truth"].value is False
    values = meta["dr_policy_value_model"].value
    assert set(values) == set(effects.ESTIMATORS) and all(np.isfinite(v) for v in values.values())
