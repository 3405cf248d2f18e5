"""Jobs: one site delivery through deid → omop → features, and the cross-site twin + model refresh."""

import dagster as dg

from twin_pipeline.defs.partitions import site_delivery_partitions

site_delivery_job = dg.define_asset_job(
    name="site_delivery_job",
    selection=dg.AssetSelection.groups("deid", "omop", "features"),
    partitions_def=site_delivery_partitions,
    description="One site delivery: parse + quarantine + de-identify, harmonize, extract features (gated).",
)

twin_refresh_job = dg.define_asset_job(
    name="twin_refresh_job",
    selection=dg.AssetSelection.groups("twin", "ml"),
    description="Rebuild every twin across sites, refit and log the treatment-effect model, simulate, evaluate.",
)
