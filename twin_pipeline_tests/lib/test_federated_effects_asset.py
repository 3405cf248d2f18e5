"""`federated.site_effect_estimates` / `federated.pooled_effects` invoked directly (no materialize, no
pipeline run): a generated twin table in a temp DuckDB, the reference sites' YAMLs for thresholds."""

from __future__ import annotations

import warnings

import dagster as dg
import duckdb
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource

from twin_pipeline.defs.federated.assets import SiteEffectConfig, pooled_effects, site_effect_estimates
from twin_pipeline.lib import effects
from twin_pipeline.resources import LandingResource
from twin_pipeline.synth.sites import site_profiles, write_site_yaml

SITES = ("hospital_a", "hospital_b", "hospital_c")


@pytest.fixture(scope="module")
def site_outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fed_effects")
    for p in site_profiles(3):
        write_site_yaml(p, root / "sites")
    df, _ = effects.generator_twins(3000, seed=0, n_sites=3)
    # one site too small to estimate: only 30 patients
    df = pd.concat([df[df["site_id"] != "hospital_c"], df[df["site_id"] == "hospital_c"].head(30)])
    con = duckdb.connect(str(root / "w.duckdb"))
    con.execute("create schema twin")
    con.register("df", df)
    con.execute("create table twin.patient_twin as select * from df")
    con.close()
    warehouse = DuckDBResource(database=str(root / "w.duckdb"))
    landing = LandingResource(landing_dir=str(root / "landing"), quarantine_dir=str(root / "q"),
                              sites_dir=str(root / "sites"))
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for site in SITES:
            ctx = dg.build_asset_context(partition_key=site)
            out[site] = list(site_effect_estimates(ctx, config=SiteEffectConfig(), warehouse=warehouse,
                                                   landing=landing))
    return out, set(df["person_id"])


def test_sites_release_subgroup_estimates_without_small_cells(site_outputs):
    out, person_ids = site_outputs
    for site in ("hospital_a", "hospital_b"):
        output, check = out[site]
        df, meta = output.value, output.metadata
        assert list(df.columns) == ["siteid", "therapy", "subgroup", "n", "estimate", "se"]
        assert set(df["siteid"]) == {site} and set(df["subgroup"]) <= set(effects.EFFECT_SUBGROUPS)
        assert meta["estimable"].value and meta["arms_released"].value == 3
        assert len(df) + meta["rows_withheld_small_cells"].value == 15
        assert (df["n"] >= max(meta["threshold"].value, effects.MIN_ROWS_PER_ARM)).all() and (df["se"] > 0).all()
        assert check.passed
        assert not person_ids & set(df.astype(str).to_numpy().ravel())
    output, check = out["hospital_c"]
    assert output.value.empty and not output.metadata["estimable"].value and check.passed


def test_pooled_effects_metadata_shows_per_therapy_re_i2_and_q(site_outputs):
    out, _ = site_outputs
    site = pd.concat([out[s][0].value for s in SITES], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        output, check = list(pooled_effects(dg.build_asset_context(), site_effects=site))
    pooled, meta = output.value, output.metadata
    assert check.passed
    assert len(pooled) == site[["therapy", "subgroup"]].drop_duplicates().shape[0]
    for arm in ("pulmonary_rehab", "colchicine", "antiviral"):
        row = pooled[(pooled["therapy"] == arm) & (pooled["subgroup"] == "all")].iloc[0]
        assert meta[f"{arm}_random"].value == pytest.approx(row["random"])
        assert meta[f"{arm}_i2"].value == pytest.approx(row["i2"])
        assert meta[f"{arm}_q_pvalue"].value == pytest.approx(row["q_pvalue"])
    assert "| pulmonary_rehab | age_ge65 |" in meta["by_therapy_subgroup"].value
