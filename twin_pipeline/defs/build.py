"""Assemble the Definitions from the layer folders, with resources bound to environment variables."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource
from twin_pipeline.io_managers import WarehouseIOManager

from twin_pipeline.defs.deid import assets as deid_assets
from twin_pipeline.defs.features import assets as feature_assets
from twin_pipeline.defs.federated import assets as federated_assets
from twin_pipeline.defs.ingest import sensors
from twin_pipeline.defs.jobs import (
    federated_effects_job,
    federated_he_pool_job,
    federated_he_site_job,
    federated_pool_job,
    federated_site_job,
    site_delivery_job,
    twin_refresh_job,
)
from twin_pipeline.defs.models import assets as model_assets
from twin_pipeline.defs.omop import assets as omop_assets
from twin_pipeline.defs.privacy import assets as privacy_assets
from twin_pipeline.defs.twins import assets as twin_assets
from twin_pipeline.resources import (
    DeidResource,
    GroundTruthResource,
    LandingResource,
    MlflowResource,
    WaveformStoreResource,
)

ASSET_MODULES = [deid_assets, omop_assets, feature_assets, twin_assets, model_assets, federated_assets,
                 privacy_assets]


def env_resources() -> dict:
    """Resources read from the environment when a run starts (see .env.example)."""
    return {
        "io_manager": WarehouseIOManager(database=dg.EnvVar("TWIN_WAREHOUSE")),
        "warehouse": DuckDBResource(database=dg.EnvVar("TWIN_WAREHOUSE")),
        "landing": LandingResource(
            landing_dir=dg.EnvVar("TWIN_LANDING_DIR"),
            quarantine_dir=dg.EnvVar("TWIN_QUARANTINE_DIR"),
            sites_dir=dg.EnvVar("TWIN_SITES_DIR"),
            enclave_identity=dg.EnvVar("TWIN_ENCLAVE_IDENTITY"),
        ),
        "deid": DeidResource(
            secret=dg.EnvVar("TWIN_DEID_SECRET"),
            max_shift_days=dg.EnvVar.int("TWIN_MAX_SHIFT_DAYS"),
            demo_mode=dg.EnvVar.int("TWIN_DEMO_MODE"),
        ),
        "waveform_store": WaveformStoreResource(root=dg.EnvVar("TWIN_WAVEFORM_STORE")),
        "ground_truth": GroundTruthResource(root=dg.EnvVar("TWIN_GROUND_TRUTH_DIR")),
        "federated": federated_assets.FederatedResource(
            outbox_dir=dg.EnvVar("TWIN_FEDERATED_OUTBOX"),
            dp_epsilon=dg.EnvVar("TWIN_DP_EPSILON"),
            dp_total_budget=dg.EnvVar("TWIN_DP_TOTAL_BUDGET"),
            dp_max_cells_per_patient=dg.EnvVar.int("TWIN_DP_MAX_CELLS_PER_PATIENT"),
            he_key_dir=dg.EnvVar("TWIN_HE_KEY_DIR"),
            he_key_bits=dg.EnvVar.int("TWIN_HE_KEY_BITS"),
        ),
        "mlflow": MlflowResource(
            tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"),
            artifact_root=dg.EnvVar("TWIN_MLFLOW_ARTIFACTS"),
        ),
    }


def all_assets() -> list:
    return dg.load_assets_from_modules(ASSET_MODULES)


# Each step process would otherwise re-import Great Expectations, neurokit2 and MLflow (5–10 s);
# a forkserver that preloads them makes UI-launched runs start steps in well under a second.
EXECUTOR = dg.multiprocess_executor.configured(
    {
        "max_concurrent": 2,
        "start_method": {
            "forkserver": {
                "preload_modules": [
                    "great_expectations",
                    "twin_pipeline.quality.gx",
                    "twin_pipeline.quality.suites",
                    "twin_pipeline.defs.build",
                ]
            }
        },
    }
)


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    return dg.Definitions(
        executor=EXECUTOR,
        assets=all_assets(),
        jobs=[site_delivery_job, twin_refresh_job, federated_site_job, federated_effects_job, federated_pool_job,
              federated_he_site_job, federated_he_pool_job],
        sensors=[
            sensors.landing_delivery_sensor,
            sensors.federated_after_delivery,
            sensors.twin_refresh_after_delivery,
            sensors.federated_effects_after_refresh,
            sensors.federated_pool_after_effects,
            sensors.run_failure_report,
        ],
        schedules=[sensors.nightly_twin_refresh],
        resources=resources or env_resources(),
    )
