"""Jobs: one site delivery through deid → omop → features; per-site federated outputs; the cross-site
twin + model refresh (which also pools the sites' shareable files)."""

import dagster as dg

from twin_pipeline.defs.partitions import site_delivery_partitions, site_partitions

SHAREABLE_FILES = ("site_age_sex", "site_diag_proc_med", "site_labs", "site_daily_counts")

site_delivery_job = dg.define_asset_job(
    name="site_delivery_job",
    selection=dg.AssetSelection.groups("deid", "omop", "features") - dg.AssetSelection.keys(["omop", "care_site"]),
    partitions_def=site_delivery_partitions,
    description="One site delivery: parse + quarantine + de-identify, harmonize, extract features (gated).",
)

federated_site_job = dg.define_asset_job(
    name="federated_site_job",
    selection=dg.AssetSelection.keys(*[["federated", n] for n in SHAREABLE_FILES]),
    partitions_def=site_partitions,
    description="One site's 4CE-style shareable files (obfuscated with the site's small-cell threshold).",
)

federated_effects_job = dg.define_asset_job(
    name="federated_effects_job",
    selection=dg.AssetSelection.keys(["federated", "site_effect_estimates"]),
    partitions_def=site_partitions,
    description="One site's doubly-robust effect estimates (estimate + SE per therapy) for federated pooling.",
)

twin_refresh_job = dg.define_asset_job(
    name="twin_refresh_job",
    selection=dg.AssetSelection.groups("twin", "ml", "privacy")
    | dg.AssetSelection.keys(["omop", "care_site"])
    | dg.AssetSelection.keys(["federated", "pooled_age_sex"], ["federated", "pooled_diag_proc_med"]),
    description="Rebuild every twin across sites, refit and log the treatment-effect models, simulate, evaluate; "
    "pool the sites' shareable files.",
)

federated_he_site_job = dg.define_asset_job(
    name="federated_he_site_job",
    selection=dg.AssetSelection.keys(["federated", "site_encrypted_age_sex"]),
    partitions_def=site_partitions,
    description="Optional homomorphic mode, site side: encrypt the site's unobfuscated AgeSex counts under the "
    "coordinator's Paillier public key (ciphertext file in the site's outbox).",
)

federated_he_pool_job = dg.define_asset_job(
    name="federated_he_pool_job",
    selection=dg.AssetSelection.keys(["federated", "he_pooled_age_sex"]),
    description="Optional homomorphic mode, coordinator side: sum the sites' ciphertexts, decrypt only the total.",
)

federated_pool_job = dg.define_asset_job(
    name="federated_pool_job",
    selection=dg.AssetSelection.keys(["federated", "pooled_effects"]),
    description="Coordinator: pool the sites' effect estimates (fixed + random effects, heterogeneity).",
)
