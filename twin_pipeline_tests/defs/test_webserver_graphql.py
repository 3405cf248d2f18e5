"""Start the real Dagster webserver on a free loopback port and read the asset graph over GraphQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from twin_pipeline_tests.conftest import REPO_ROOT, TEST_SECRET

pytestmark = pytest.mark.slow

QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    isPartitioned
    partitionDefinition { type dimensionTypes { name type } }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webserver_serves_asset_graph_checks_and_partitions(tmp_path):
    port = _free_port()
    env = dict(os.environ)
    env.update({
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "TWIN_LANDING_DIR": str(tmp_path / "landing"), "TWIN_QUARANTINE_DIR": str(tmp_path / "q"),
        "TWIN_SITES_DIR": str(REPO_ROOT / "data" / "sites"), "TWIN_WAREHOUSE": str(tmp_path / "w.duckdb"),
        "TWIN_WAVEFORM_STORE": str(tmp_path / "wf"), "TWIN_GROUND_TRUTH_DIR": str(tmp_path / "gt"),
        "TWIN_DEID_SECRET": TEST_SECRET, "TWIN_ENCLAVE_IDENTITY": "", "TWIN_FEDERATED_OUTBOX": str(tmp_path / "outbox"), "TWIN_DEMO_MODE": "0", "TWIN_MAX_SHIFT_DAYS": "180",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "TWIN_MLFLOW_ARTIFACTS": str(tmp_path / "art"),
    })
    Path(env["DAGSTER_HOME"]).mkdir()
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    webserver = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(webserver), "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO_ROOT / "workspace.yaml")],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        deadline = time.time() + 120
        data = None
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"webserver exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                r = requests.post(url, json={"query": QUERY}, timeout=10)
                if r.ok and r.json().get("data", {}).get("assetNodes"):
                    data = r.json()["data"]["assetNodes"]
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert data, "webserver did not answer the asset graph query in time"
        nodes = {"/".join(n["assetKey"]["path"]): n for n in data}
        assert {"deid/person", "omop/measurement", "features/ecg_record_features", "twin/patient_twin",
                "ml/treatment_simulation"} <= set(nodes)
        assert {"deid", "omop", "features", "twin", "ml", "federated"} <= {n["groupName"] for n in nodes.values()}
        person = nodes["deid/person"]
        assert person["isPartitioned"]
        assert {d["name"] for d in person["partitionDefinition"]["dimensionTypes"]} == {"site", "delivery"}
        assert not nodes["twin/patient_twin"]["isPartitioned"]
        checks = person["assetChecksOrError"]["checks"]
        assert checks and all(c["blocking"] for c in checks)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
