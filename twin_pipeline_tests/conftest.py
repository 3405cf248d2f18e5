"""Shared fixtures: environment isolation, a tiny generated cohort, tmp warehouses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TEST_SECRET = "test-secret-0123456789abcdef"


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared reference data not present: {path}")
    return path


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> dict[str, Path]:
    """2 sites × ~12 patients, 2 deliveries, short waveforms; generated once per test session/worker."""
    from twin_pipeline.synth.generator import generate_cohort

    root = tmp_path_factory.mktemp("cohort")
    paths = {
        "landing": root / "landing",
        "truth": root / "ground_truth",
        "sites": root / "sites",
        "root": root,
    }
    generate_cohort(
        paths["landing"], sites=2, patients=12, seed=3, truth_dir=paths["truth"], sites_dir=paths["sites"],
        deliveries=2, waveform_seconds={"ecg_monitor": 20, "ventilator": 30, "wearable": 60},
    )
    return paths


def make_resources(paths: dict[str, Path], tmp_path: Path) -> dict:
    """Resources for `dg.materialize` against a tmp warehouse and the given cohort."""
    from dagster_duckdb import DuckDBResource
    from twin_pipeline.io_managers import WarehouseIOManager

    from twin_pipeline.defs.federated.assets import FederatedResource
    from twin_pipeline.resources import (
        DeidResource,
        GroundTruthResource,
        LandingResource,
        MlflowResource,
        WaveformStoreResource,
    )

    db = str(tmp_path / "warehouse.duckdb")
    return {
        "io_manager": WarehouseIOManager(database=db),
        "warehouse": DuckDBResource(database=db),
        "landing": LandingResource(
            landing_dir=str(paths["landing"]), quarantine_dir=str(tmp_path / "quarantine"),
            sites_dir=str(paths["sites"]),
        ),
        "deid": DeidResource(secret=TEST_SECRET, max_shift_days=120),
        "waveform_store": WaveformStoreResource(root=str(tmp_path / "waveforms")),
        "ground_truth": GroundTruthResource(root=str(paths["truth"])),
        "federated": FederatedResource(outbox_dir=str(tmp_path / "outbox")),
        "mlflow": MlflowResource(
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "mlartifacts"),
        ),
    }


def materialize_site_deliveries(landing: Path, resources: dict, instance) -> list:
    """Register every complete delivery under `landing` as partitions and materialize its per-delivery
    layers (deid, omop, features) in `instance`; returns the deliveries. Fails on any unsuccessful run."""
    import dagster as dg

    from twin_pipeline.defs.build import all_assets
    from twin_pipeline.defs.partitions import delivery_partitions, partition_key_for, site_partitions
    from twin_pipeline.sources.landing import find_deliveries

    deliveries = find_deliveries(landing)
    instance.add_dynamic_partitions(site_partitions.name, sorted({d.site_id for d in deliveries}))
    instance.add_dynamic_partitions(delivery_partitions.name, sorted({d.delivery_id for d in deliveries}))
    assets = all_assets()
    per_delivery = dg.AssetSelection.groups("deid", "omop", "features") - dg.AssetSelection.keys(["omop", "care_site"])
    for d in deliveries:
        res = dg.materialize(assets, selection=per_delivery, resources=resources,
                             partition_key=partition_key_for(d.site_id, d.delivery_id), instance=instance)
        assert res.success, f"{d.site_id}/{d.delivery_id} failed"
    return deliveries
