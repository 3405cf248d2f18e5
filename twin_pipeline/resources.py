"""Typed Dagster resources, configured from environment variables (see `.env.example`).

Nothing here chooses an environment at import time: `definitions.py` builds the resources with
`dg.EnvVar(...)` and Dagster resolves them when a run starts.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from twin_pipeline.lib.deid import DeidKey
from twin_pipeline.sources.encrypted_delivery import DeliveryIntegrityError, decrypt_delivery, is_encrypted
from twin_pipeline.sources.landing import (
    Delivery,
    SiteConfig,
    find_deliveries,
    load_site_config,
)

DEMO_SECRET_PREFIX = "demo-only-"


class LandingResource(dg.ConfigurableResource):
    """Where sites drop deliveries (PHI zone), where rejects go, and the per-site conventions.

    A delivery is either a plain folder or, in enclave mode, an age-encrypted archive
    (`delivery.tar.age`); `delivery_dir` returns a readable folder either way, decrypting into a
    private temp folder outside the landing area that is deleted when the run's resources are torn down.
    """

    landing_dir: str = Field(description="Root of data/landing/<site>/<delivery>/ (PHI zone).")
    quarantine_dir: str = Field(description="Root of data/quarantine/<site>/<delivery>/ (PHI zone).")
    sites_dir: str = Field(description="Folder with one <site_id>.yaml per site.")
    enclave_identity: str = Field(
        default="", description="age X25519 secret key (TWIN_ENCLAVE_IDENTITY) for encrypted deliveries. Never logged."
    )

    _decrypted: dict = PrivateAttr(default_factory=dict)

    def raw_delivery_dir(self, site_id: str, delivery_id: str) -> Path:
        return Path(self.landing_dir) / site_id / delivery_id

    def delivery_dir(self, site_id: str, delivery_id: str) -> Path:
        """A readable delivery folder (decrypted once per run for encrypted deliveries)."""
        raw = self.raw_delivery_dir(site_id, delivery_id)
        if not is_encrypted(raw):
            return raw
        key = (site_id, delivery_id)
        if key not in self._decrypted:
            if not self.enclave_identity:
                raise DeliveryIntegrityError(
                    f"delivery {site_id}/{delivery_id} is encrypted but TWIN_ENCLAVE_IDENTITY is not set"
                )
            self._decrypted[key] = decrypt_delivery(raw, self.enclave_identity)
        return self._decrypted[key]

    def teardown_after_execution(self, context) -> None:
        for path in self._decrypted.values():
            shutil.rmtree(path, ignore_errors=True)
        self._decrypted.clear()

    def quarantine_path(self, site_id: str, delivery_id: str) -> Path:
        return Path(self.quarantine_dir) / site_id / delivery_id

    def site_config(self, site_id: str) -> SiteConfig:
        return load_site_config(Path(self.sites_dir), site_id)

    def ready_deliveries(self) -> list[Delivery]:
        return find_deliveries(Path(self.landing_dir))


class DeidResource(dg.ConfigurableResource):
    """The de-identification secret and date-shift window.

    The secret keys every pseudonym and date shift. It comes from `TWIN_DEID_SECRET`; a value that
    starts with `demo-only-` is accepted only when `demo_mode` is true, so a demo secret can never
    silently protect real data.
    """

    secret: str = Field(description="HMAC secret (from TWIN_DEID_SECRET). Never logged.")
    max_shift_days: int = Field(default=180, description="Dates shift by 1..N days, either way.")
    demo_mode: int = Field(default=0, description="1 allows a `demo-only-` secret (TWIN_DEMO_MODE).")

    _key: DeidKey | None = PrivateAttr(default=None)

    def key(self) -> DeidKey:
        if self._key is None:
            if not self.secret:
                raise dg.Failure(
                    "TWIN_DEID_SECRET is empty: set a secret of at least 16 characters "
                    "(see .env.example). Refusing to pseudonymize without one."
                )
            if self.secret.startswith(DEMO_SECRET_PREFIX) and not self.demo_mode:
                raise dg.Failure(
                    "TWIN_DEID_SECRET is the labelled demo secret but TWIN_DEMO_MODE is not 1: "
                    "set a real secret for non-demo data."
                )
            try:
                self._key = DeidKey.from_secret(self.secret, max_shift_days=self.max_shift_days)
            except ValueError as exc:
                raise dg.Failure(f"TWIN_DEID_SECRET rejected: {exc}") from None
        return self._key


class WaveformStoreResource(dg.ConfigurableResource):
    """Folder holding de-identified WFDB copies (renamed records, shifted dates, scrubbed comments)."""

    root: str = Field(description="Root of the de-identified waveform store.")

    def partition_dir(self, site_id: str, delivery_id: str) -> Path:
        return Path(self.root) / site_id / delivery_id


class GroundTruthResource(dg.ConfigurableResource):
    """Generator ground truth; read only by the explicitly named evaluation assets."""

    root: str = Field(description="Root of data/ground_truth/<site>/.")

    def site_dirs(self) -> list[Path]:
        root = Path(self.root)
        if not root.exists():
            return []
        return sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"[a-z][a-z0-9_]{1,31}", p.name))


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking server / store used by the model assets (dagster-mlflow is op-era)."""

    tracking_uri: str = Field(description="e.g. sqlite:///data/mlflow/mlflow.db or http://127.0.0.1:5000")
    artifact_root: str = Field(default="", description="Artifact location for new experiments (local path).")
    experiment_name: str = Field(default="twin_pipeline/treatment_effects")
    registered_model_name: str = Field(default="twin_pipeline_treatment_effect")

    def artifact_location(self) -> str | None:
        if not self.artifact_root:
            return None
        return Path(self.artifact_root).resolve().as_uri()
