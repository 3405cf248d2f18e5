"""Jobs: one site delivery through deid → omop → features, and the cross-site twin + model refresh."""

import dagster as dg

from twin_pipeline.defs.partitions import site_delivery_partitions, site_partitions

site_delivery_job = dg.define_asset_job(
    name="site_delivery_job",
    selection=dg.AssetSelection.groups("deid", "omop", "features"),
    partitions_def=site_delivery_partitions,
    description="One site delivery: parse + quarantine + de-identify, harmonize, extract features (gated).",
)

federated_site_job = dg.define_asset_job(
    name="federated_site_job",
    selection=dg.AssetSelection.keys(
        *[["federated", n] for n in ("site_age_sex", "site_diag_proc_med", "site_labs", "site_daily_counts")]
    ),
    partitions_def=site_partitions,
    description="One site's 4CE-style shareable files (obfuscated with the site's small-cell threshold).",
)

twin_refresh_job = dg.define_asset_job(
    name="twin_refresh_job",
    selection=dg.AssetSelection.groups("twin", "ml")
    | dg.AssetSelection.keys(["federated", "pooled_age_sex"], ["federated", "pooled_diag_proc_med"]),
    description="Rebuild every twin across sites, refit and log the treatment-effect model, simulate, evaluate.",
)
