"""`federated` layer: per-site 4CE-style shareable files (obfuscated) and coordinator pooling.

Per-site assets are partitioned by site and read only that site's de-identified `omop` tables; they
write the only things that may leave a site (CSV outbox + `federated.site_*` tables). Coordinator
assets read only those shareable tables, never a patient-level table (a test enforces it).
"""

from pathlib import Path

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

from twin_pipeline.defs.partitions import WAREHOUSE_POOL, site_partitions
from twin_pipeline.lib import federated as fed
from twin_pipeline.resources import LandingResource

LAB_LOINCS = ["1988-5", "2345-7", "2160-0", "4548-4", "59408-5", "64098-7"]
SITE_FILES = {  # asset name -> 4CE file name
    "site_age_sex": "AgeSex",
    "site_diag_proc_med": "DiagProcMed",
    "site_labs": "Labs",
    "site_daily_counts": "DailyCounts",
}
DESCRIPTIONS = {
    "site_age_sex": "One row per site × age group × sex (4CE AgeSex, obfuscated): patients, mean age, ever severe.",
    "site_diag_proc_med": "One row per site × concept (ICD-10 3-char, drug class, procedure): patients per window (4CE DiagProcMed, obfuscated).",
    "site_labs": "One row per site × LOINC × day since index: patients, mean/sd of value and log value (4CE Labs, obfuscated).",
    "site_daily_counts": "One row per site × calendar date: cumulative patients and deaths (4CE DailyCounts, obfuscated).",
}


def _positive_float(variable: str, raw, empty_means: str = "") -> float | None:
    """`raw` (an env-bound string) as a float > 0; None when empty; a Failure naming `variable` otherwise."""
    text = str(raw).strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise dg.Failure(f"{variable}={text!r} is not a number{empty_means}") from None
    if not value > 0:
        raise dg.Failure(f"{variable}={text!r} must be > 0{empty_means}")
    return value


class FederatedResource(dg.ConfigurableResource):
    """Where a site's shareable files are written before they leave the site; optional differential
    privacy on the released counts (`lib.dp`) and the coordinator's Paillier key directory (`lib.homomorphic`).

    `dp_epsilon` and `dp_total_budget` are strings because they come from environment variables and an
    empty TWIN_DP_EPSILON means "DP off" (Dagster has no float EnvVar)."""

    outbox_dir: str = Field(description="Root of <outbox>/<site>/<4CE file>.csv (shareable, obfuscated).")
    dp_epsilon: str = Field(default="", description="ε per release (TWIN_DP_EPSILON); empty = DP off.")
    dp_total_budget: str = Field(default="10", description="ε per site over all releases (TWIN_DP_TOTAL_BUDGET).")
    dp_max_cells_per_patient: int = Field(
        default=16, description="DiagProcMed contribution bound under DP (TWIN_DP_MAX_CELLS_PER_PATIENT).")
    he_key_dir: str = Field(
        default="", description="Coordinator's Paillier keypair directory (TWIN_HE_KEY_DIR); private key never leaves it.")
    he_key_bits: int = Field(default=2048, description="Paillier modulus bits when the keypair is generated.")

    def dp_epsilon_value(self) -> float | None:
        """ε per release, or None when DP is off."""
        return _positive_float("TWIN_DP_EPSILON", self.dp_epsilon, empty_means=" (leave it empty to switch DP off)")

    def dp_total_budget_value(self) -> float:
        """The site's total ε over all its releases."""
        value = _positive_float("TWIN_DP_TOTAL_BUDGET", self.dp_total_budget)
        if value is None:
            raise dg.Failure("TWIN_DP_TOTAL_BUDGET is empty: set the site's total ε (e.g. 10)")
        return value

    def site_outbox(self, site_id: str) -> Path:
        return Path(self.outbox_dir) / site_id

    def dp_ledger(self, site_id: str):
        """The site's ε ledger (`<outbox>/<site>/dp_ledger.json`: release ids, files, ε, timestamps)."""
        from twin_pipeline.lib.dp import PrivacyLedger

        return PrivacyLedger(self.site_outbox(site_id) / "dp_ledger.json", site_id, self.dp_total_budget_value())

    def _key_dir(self) -> Path:
        if not self.he_key_dir:
            raise dg.Failure("TWIN_HE_KEY_DIR is empty: set the coordinator's Paillier key directory (see .env.example)")
        return Path(self.he_key_dir)

    def he_public_key(self):
        """The coordinator's public key (the keypair is generated once, on first use, in `he_key_dir`)."""
        from twin_pipeline.lib import homomorphic as he

        return he.load_or_create_keypair(self._key_dir(), self.he_key_bits)

    def he_private_key(self):
        """Coordinator only: the private key (never logged, never written to the warehouse)."""
        from twin_pipeline.lib import homomorphic as he

        return he.load_private_key(self._key_dir())


def _site_tables(warehouse: DuckDBResource, site_id: str) -> dict[str, pd.DataFrame]:
    tables = {
        "person": "person", "condition": "condition_occurrence", "measurement": "measurement",
        "drug": "drug_exposure", "procedure": "procedure_occurrence",
    }
    out = {}
    with warehouse.get_connection() as conn:
        for name, table in tables.items():
            exists = conn.execute(
                "select count(*) from information_schema.tables where table_schema='omop' and table_name=?", [table]
            ).fetchone()[0]
            if not exists:
                raise dg.Failure(f"omop.{table} does not exist yet: materialize the site's deliveries first")
            out[name] = conn.execute(f'select * from omop."{table}" where site_id = ?', [site_id]).df()
    return out


def _small_cell_check(name: str) -> dg.AssetCheckSpec:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            "no_small_cells", asset=["federated", name], blocking=True, partitions_def=site_partitions,
            description="No count in 1..threshold-1 is released unmasked (4CE obfuscation rule).",
        )


@dg.multi_asset(
    outs={
        f"federated__{name}": dg.AssetOut(
            key=["federated", name], group_name="federated", description=DESCRIPTIONS[name],
            kinds={"duckdb", "csv"}, metadata={"partition_expr": "siteid"},
        )
        for name in SITE_FILES
    },
    partitions_def=site_partitions,
    deps=[dg.AssetKey(["omop", t]) for t in
          ("person", "condition_occurrence", "measurement", "drug_exposure", "procedure_occurrence")],
    check_specs=[_small_cell_check(name) for name in SITE_FILES],
    pool=WAREHOUSE_POOL,
    can_subset=False,
)
def site_shareable_files(
    context: dg.AssetExecutionContext, warehouse: DuckDBResource, landing: LandingResource,
    federated: FederatedResource,
):
    """Build this site's 4CE-style files from its de-identified omop tables and obfuscate them with the
    site's small-cell threshold (site YAML); write them to the outbox and the warehouse.

    With differential privacy on (TWIN_DP_EPSILON set), the release is first charged to the site's ε
    ledger (refused when over budget), AgeSex and DiagProcMed counts are noised (`lib.dp`) and
    post-processed, Labs and DailyCounts are withheld (header only), and then obfuscated as usual."""
    site_id = context.partition_key
    threshold = int(landing.site_config(site_id).small_cell_threshold)
    epsilon = federated.dp_epsilon_value()
    dp_meta: dict = {"dp_enabled": epsilon is not None}
    file_meta: dict[str, dict] = {name: {} for name in SITE_FILES}
    t = _site_tables(warehouse, site_id)
    index = fed.cohort_index(t["condition"])
    raw = {
        "site_age_sex": fed.site_age_sex(site_id, t["person"], index, t["procedure"]),
        "site_diag_proc_med": fed.site_diag_proc_med(site_id, index, t["condition"], t["drug"], t["procedure"]),
        "site_labs": fed.site_labs(site_id, index, t["measurement"], t["procedure"], LAB_LOINCS),
        "site_daily_counts": fed.site_daily_counts(site_id, index, t["person"]),
    }
    if epsilon is not None:  # charge before any noise is drawn or file written: a refused release leaves nothing
        from twin_pipeline.lib import dp

        ledger = federated.dp_ledger(site_id)
        try:
            spent = ledger.charge(context.run_id, dp.split_epsilon(epsilon))
        except dp.PrivacyBudgetExceeded as exc:
            raise dg.Failure(str(exc)) from None
        dp_meta.update({"dp_epsilon_release": spent["epsilon"], "dp_epsilon_spent": round(spent["spent"], 6),
                        "dp_epsilon_remaining": round(spent["remaining"], 6),
                        "dp_total_budget": ledger.total_budget})
        eps = dp.split_epsilon(epsilon)
        raw["site_age_sex"], rep_as = dp.dp_age_sex(
            site_id, fed.age_sex_patients(t["person"], index, t["procedure"]), eps["AgeSex"])
        raw["site_diag_proc_med"], rep_dpm = dp.dp_diag_proc_med(
            site_id, fed.dpm_patient_cells(index, t["condition"], t["drug"], t["procedure"]), eps["DiagProcMed"],
            dp.public_dpm_concepts(), max_cells_per_patient=federated.dp_max_cells_per_patient)
        file_meta["site_age_sex"] = rep_as.as_metadata()
        file_meta["site_diag_proc_med"] = rep_dpm.as_metadata()
        for name in ("site_labs", "site_daily_counts"):  # dp.DP_WITHHELD: no bounded sensitivity
            raw[name] = raw[name].iloc[0:0]
            file_meta[name] = {"dp_withheld": True}
    outbox = federated.site_outbox(site_id)
    outbox.mkdir(parents=True, exist_ok=True)
    for name, file in SITE_FILES.items():
        shared = fed.obfuscate(raw[name], file, threshold)
        shared.to_csv(outbox / f"{file}.csv", index=False)
        masked = int(sum((shared[c] == fed.MASK).sum() for c in fed.COUNT_COLUMNS[file] if c in shared.columns))
        yield dg.Output(
            shared, output_name=f"federated__{name}",
            metadata={
                "dagster/row_count": len(shared), "rows_before_obfuscation": len(raw[name]),
                "masked_cells": masked, "threshold": threshold, "bytes_shared": (outbox / f"{file}.csv").stat().st_size,
                **dp_meta, **file_meta[name],
            },
        )
        bad = fed.small_cells(shared, file, threshold)
        yield dg.AssetCheckResult(
            asset_key=dg.AssetKey(["federated", name]), check_name="no_small_cells", passed=bad == 0,
            metadata={"unmasked_small_cells": bad, "threshold": threshold},
        )


class SiteEffectConfig(dg.Config):
    seed: int = Field(default=7, description="Seed for the site's cross-fitted doubly-robust estimates.")
    n_folds: int = Field(default=3, description="Cross-fitting folds at the site.")


SITE_EFFECT_COLUMNS = ["siteid", "therapy", "subgroup", "n", "estimate", "se"]


@dg.asset(
    key=["federated", "site_effect_estimates"],
    group_name="federated",
    kinds={"duckdb", "scikit-learn"},
    partitions_def=site_partitions,
    metadata={"partition_expr": "siteid"},
    deps=[dg.AssetKey(["twin", "patient_twin"])],
    check_specs=[_small_cell_check("site_effect_estimates")],
    pool=WAREHOUSE_POOL,
)
def site_effect_estimates(
    context: dg.AssetExecutionContext, config: SiteEffectConfig, warehouse: DuckDBResource, landing: LandingResource
):
    """One row per site × therapy × prespecified subgroup (`all`, age <65 / ≥65 years, baseline 6MWD
    <500 / ≥500 m; `effects.EFFECT_SUBGROUPS`): the site's doubly-robust (AIPW, cross-fitted) effect vs
    standard care in metres with its standard error, from the cross-fitted pseudo-outcomes. A row is not
    released when the therapy's or standard care's count in the subgroup is below the site's small-cell
    threshold or below `effects.MIN_ROWS_PER_ARM`; `n` = the therapy's patients in the subgroup."""
    from twin_pipeline.lib import effects
    from twin_pipeline.lib.twin import MODEL_FEATURES

    site_id = context.partition_key
    threshold = int(landing.site_config(site_id).small_cell_threshold)
    with warehouse.get_connection() as conn:
        twins = conn.execute("select * from twin.patient_twin where site_id = ?", [site_id]).df()
    train = twins[twins["therapy"].notna() & twins["outcome_6mwd_90d_m"].notna()]
    per_arm = train["therapy"].value_counts()
    enough = all(per_arm.get(a, 0) >= effects.MIN_ROWS_PER_ARM for a in effects.ARMS)
    possible = len(effects.EFFECT_SUBGROUPS) * (len(effects.ARMS) - 1)
    if not enough:
        context.log.info(
            f"{site_id}: fewer than {effects.MIN_ROWS_PER_ARM} twins with an observed outcome in some arm; "
            "no effect estimates released for this site"
        )
        est = pd.DataFrame(columns=effects.SUBGROUP_EFFECT_COLUMNS)
    else:
        est, _ = effects.aipw_subgroup_effects(
            train, MODEL_FEATURES, small_cell_threshold=threshold, seed=config.seed, n_folds=config.n_folds)
    out = est.assign(siteid=site_id)[SITE_EFFECT_COLUMNS].reset_index(drop=True)
    out = out.astype({"n": "int64", "estimate": "float64", "se": "float64"})
    released_all = out[out["subgroup"] == "all"]
    yield dg.Output(out, metadata={
        "dagster/row_count": len(out), "n_train": int(len(train)),
        "arms_released": int(released_all["therapy"].nunique()),
        "subgroups": dg.MetadataValue.json(list(effects.EFFECT_SUBGROUPS)),
        "rows_withheld_small_cells": int(possible - len(out)) if enough else 0,
        "threshold": threshold, "min_rows_per_arm": effects.MIN_ROWS_PER_ARM, "estimable": bool(enough),
    })
    floor = max(threshold, 1)
    bad = int(((est["n"] < floor) | (est["n_reference"] < floor)).sum()) if len(est) else 0
    yield dg.AssetCheckResult(check_name="no_small_cells", passed=bad == 0, metadata={"unmasked_small_cells": bad})


@dg.asset(
    key=["federated", "pooled_effects"],
    group_name="federated",
    kinds={"duckdb", "scipy"},
    ins={"site_effects": dg.AssetIn(key=["federated", "site_effect_estimates"])},
    check_specs=[dg.AssetCheckSpec("pooled_effects_finite", asset=["federated", "pooled_effects"], blocking=True)],
    pool=WAREHOUSE_POOL,
)
def pooled_effects(context: dg.AssetExecutionContext, site_effects: pd.DataFrame):
    """One row per therapy × subgroup: inverse-variance fixed and DerSimonian–Laird random-effects pooled
    effect over sites (metres), with between-site heterogeneity (Q, p, I², τ² in m²). Metadata (aggregates
    only): per therapy the random-effects estimate, I² and Q p-value of subgroup `all`, and a table of
    every therapy × subgroup."""
    from twin_pipeline.lib.meta_analysis import POOLED_COLUMNS, pool_table

    pooled = pool_table(site_effects, ["therapy", "subgroup"]) if len(site_effects) else pd.DataFrame(
        columns=["therapy", "subgroup", *POOLED_COLUMNS])
    meta = {"dagster/row_count": len(pooled), "sites": int(site_effects["siteid"].nunique()) if len(site_effects) else 0}
    for r in pooled[pooled["subgroup"] == "all"].itertuples():
        meta[f"{r.therapy}_random"] = float(r.random)
        meta[f"{r.therapy}_i2"] = float(r.i2)
        meta[f"{r.therapy}_q_pvalue"] = float(r.q_pvalue)
    if len(pooled):
        lines = ["| therapy | subgroup | sites | RE (m) | RE SE | FE (m) | I² | Q p | τ² |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r.therapy} | {r.subgroup} | {r.n_sites} | {r.random:.1f} | {r.random_se:.1f} | {r.fixed:.1f} | "
                  f"{r.i2:.2f} | {r.q_pvalue:.3g} | {r.tau2:.0f} |" for r in pooled.itertuples()]
        meta["by_therapy_subgroup"] = dg.MetadataValue.md("\n".join(lines))
    yield dg.Output(pooled, metadata=meta)
    ok = bool(pooled[["fixed", "random"]].notna().all().all()) if len(pooled) else True
    yield dg.AssetCheckResult(check_name="pooled_effects_finite", passed=ok)


def _site_thresholds(landing: LandingResource, sites) -> dict[str, int]:
    return {s: int(landing.site_config(s).small_cell_threshold) for s in sites}


@dg.asset(
    key=["federated", "pooled_age_sex"],
    group_name="federated",
    kinds={"duckdb"},
    ins={"age_sex": dg.AssetIn(key=["federated", "site_age_sex"]), "labs": dg.AssetIn(key=["federated", "site_labs"])},
    check_specs=[
        dg.AssetCheckSpec("cross_site_counts_consistent", asset=["federated", "pooled_age_sex"], blocking=True,
                          description="No negative counts other than -99/-999; no subgroup above its site's total."),
        dg.AssetCheckSpec("lab_units_consistent", asset=["federated", "pooled_age_sex"], blocking=False,
                          description="No site's lab distribution is off the others by a unit-error-sized factor."),
    ],
    pool=WAREHOUSE_POOL,
)
def pooled_age_sex(context: dg.AssetExecutionContext, age_sex: pd.DataFrame, labs: pd.DataFrame,
                   landing: LandingResource):
    """Coordinator: patients by age group × sex pooled over sites from the shared files only, with the
    range that masked cells can hide."""
    thresholds = _site_thresholds(landing, age_sex["siteid"].unique())
    pooled = fed.pool_counts([age_sex], ["cohort", "age_group", "sex"], ["pts_all", "pts_ever_severe"], thresholds)
    qc = fed.cross_site_qc(age_sex, labs)
    yield dg.Output(pooled, metadata={"dagster/row_count": len(pooled), "sites": int(age_sex["siteid"].nunique())})
    yield dg.AssetCheckResult(
        check_name="cross_site_counts_consistent",
        passed=not qc["negative_counts"] and not qc["subgroup_exceeds_total"],
        metadata={k: dg.MetadataValue.json(v) for k, v in qc.items() if k != "lab_unit_suspect"},
    )
    yield dg.AssetCheckResult(
        check_name="lab_units_consistent", passed=not qc["lab_unit_suspect"],
        severity=dg.AssetCheckSeverity.WARN, metadata={"suspects": dg.MetadataValue.json(qc["lab_unit_suspect"])},
    )


@dg.asset(
    key=["federated", "pooled_diag_proc_med"],
    group_name="federated",
    kinds={"duckdb"},
    ins={"dpm": dg.AssetIn(key=["federated", "site_diag_proc_med"])},
    check_specs=[dg.AssetCheckSpec("pooled_non_negative", asset=["federated", "pooled_diag_proc_med"], blocking=True)],
    pool=WAREHOUSE_POOL,
)
def pooled_diag_proc_med(context: dg.AssetExecutionContext, dpm: pd.DataFrame, landing: LandingResource):
    """Coordinator: patients per concept and window pooled over sites from the shared files only."""
    thresholds = _site_thresholds(landing, dpm["siteid"].unique())
    pooled = fed.pool_counts([dpm], ["cohort", "concept_type", "concept_code"], list(fed.DPM_WINDOWS), thresholds)
    yield dg.Output(pooled, metadata={"dagster/row_count": len(pooled), "sites": int(dpm["siteid"].nunique())})
    ok = bool((pooled[list(fed.DPM_WINDOWS)] >= 0).all().all()) if len(pooled) else True
    yield dg.AssetCheckResult(check_name="pooled_non_negative", passed=ok)


def _site_check_spec(check: str, name: str, description: str) -> dg.AssetCheckSpec:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(check, asset=["federated", name], blocking=True, partitions_def=site_partitions,
                                 description=description)


HE_FILE = "AgeSex.paillier.json"  # per site, in its outbox: ciphertexts only
HE_COLUMNS = ["pts_all", "pts_ever_severe"]


@dg.asset(
    key=["federated", "site_encrypted_age_sex"],
    group_name="federated",
    kinds={"python", "json"},
    partitions_def=site_partitions,
    deps=[dg.AssetKey(["omop", t]) for t in ("person", "condition_occurrence", "procedure_occurrence")],
    check_specs=[_site_check_spec(
        "ciphertexts_complete", "site_encrypted_age_sex",
        "The site's file holds one ciphertext per agreed cell × count, under the coordinator's key.",
    )],
    pool=WAREHOUSE_POOL,
)
def site_encrypted_age_sex(
    context: dg.AssetExecutionContext, warehouse: DuckDBResource, federated: FederatedResource,
):
    """One ciphertext file per site (`<outbox>/<site>/AgeSex.paillier.json`): the site's UNOBFUSCATED
    AgeSex counts (pts_all, pts_ever_severe) over the public cell list `federated.AGE_SEX_CELLS`,
    each encrypted under the coordinator's Paillier public key. Nothing is written to the warehouse."""
    import time

    from twin_pipeline.lib import homomorphic as he

    site_id = context.partition_key
    pk = federated.he_public_key()
    t = _site_tables(warehouse, site_id)
    index = fed.cohort_index(t["condition"])
    counts = fed.age_sex_cell_counts(fed.age_sex_patients(t["person"], index, t["procedure"]))
    vector = counts[HE_COLUMNS].to_numpy().ravel()  # row-major: cell 0 (pts_all, severe), cell 1, ...
    start = time.perf_counter()
    enc = he.encrypt_counts(pk, vector)
    seconds = time.perf_counter() - start
    path = federated.site_outbox(site_id) / HE_FILE
    size = he.write_ciphertexts(path, site_id, pk, fed.AGE_SEX_CELLS, HE_COLUMNS, enc)
    yield dg.MaterializeResult(metadata={
        "cells": len(fed.AGE_SEX_CELLS), "ciphertexts": len(enc), "bytes_shared": size,
        "encrypt_seconds": round(seconds, 3), "key_bits": pk.n.bit_length(), "key_fingerprint": he.key_fingerprint(pk),
    })
    try:
        he.read_ciphertexts(path, pk, fed.AGE_SEX_CELLS, HE_COLUMNS)
        ok, why = True, ""
    except ValueError as exc:
        ok, why = False, str(exc)
    yield dg.AssetCheckResult(check_name="ciphertexts_complete", passed=ok, metadata={"problem": why})


@dg.asset(
    key=["federated", "he_pooled_age_sex"],
    group_name="federated",
    kinds={"duckdb", "python"},
    ins={"age_sex": dg.AssetIn(key=["federated", "site_age_sex"])},
    deps=[dg.AssetKey(["federated", "site_encrypted_age_sex"])],
    check_specs=[dg.AssetCheckSpec(
        "he_total_within_obfuscated_bounds", asset=["federated", "he_pooled_age_sex"], blocking=True,
        description="Every decrypted total lies in the range the sites' obfuscated AgeSex files allow "
                    "(released counts exact, -99 = 1..threshold-1, unreleased row = 0..threshold-1).",
    )],
    pool=WAREHOUSE_POOL,
)
def he_pooled_age_sex(context: dg.AssetExecutionContext, age_sex: pd.DataFrame, landing: LandingResource,
                      federated: FederatedResource):
    """Coordinator: exact patients per age group × sex (with `all` margins) summed over sites from their
    Paillier ciphertexts; only the summed vector is decrypted, never a single site's counts."""
    import time

    from twin_pipeline.lib import homomorphic as he

    pk = federated.he_public_key()
    files = sorted(Path(federated.outbox_dir).glob(f"*/{HE_FILE}"))
    if not files:
        raise dg.Failure(f"no site ciphertext files ({HE_FILE}) under {federated.outbox_dir}: "
                         "materialize federated/site_encrypted_age_sex for the sites first")
    vectors, sites = [], []
    for path in files:
        try:
            site, enc = he.read_ciphertexts(path, pk, fed.AGE_SEX_CELLS, HE_COLUMNS)
        except ValueError as exc:
            raise dg.Failure(str(exc)) from None
        if site != path.parent.name:
            raise dg.Failure(f"{path}: ciphertext file names site {site!r} but sits in the outbox of {path.parent.name!r}")
        sites.append(site)
        vectors.append(enc)
    start = time.perf_counter()
    total_enc = he.sum_encrypted(vectors)
    t_sum = time.perf_counter() - start
    start = time.perf_counter()
    total = he.decrypt_total(federated.he_private_key(), total_enc)
    t_dec = time.perf_counter() - start
    cells = pd.DataFrame(fed.AGE_SEX_CELLS, columns=["age_group", "sex"])
    cells[HE_COLUMNS] = total.reshape(len(fed.AGE_SEX_CELLS), len(HE_COLUMNS))
    pooled = fed.with_age_sex_margins(cells, HE_COLUMNS)
    pooled.insert(0, "cohort", fed.COHORT)
    pooled["n_sites"] = len(sites)
    pooled = pooled.astype({c: "int64" for c in HE_COLUMNS})
    yield dg.Output(pooled, metadata={
        "dagster/row_count": len(pooled), "sites": len(sites), "sum_seconds": round(t_sum, 3),
        "decrypt_seconds": round(t_dec, 3), "pts_all_total": int(pooled["pts_all"].iloc[-1]),
    })
    if federated.dp_epsilon_value() is not None:  # released files are noised: the exact bounds do not apply
        yield dg.AssetCheckResult(check_name="he_total_within_obfuscated_bounds", passed=True,
                                  metadata={"skipped": "sites release DP-noised AgeSex files"})
        return
    missing = sorted(set(sites) - set(age_sex["siteid"].unique()))
    released = age_sex[age_sex["siteid"].isin(sites)]
    thresholds = _site_thresholds(landing, sites)
    keys = ["age_group", "sex"]
    outside = []
    for col in HE_COLUMNS:
        b = fed.obfuscated_bounds([released], keys, list(zip(pooled["age_group"], pooled["sex"])), col, thresholds,
                                  sites=sites)
        v = pooled[col].to_numpy()
        bad = (v < b["lower"].to_numpy()) | (v > b["upper"].to_numpy())
        outside += [f"{col}:{a}/{s}" for a, s in zip(b.loc[bad, "age_group"], b.loc[bad, "sex"])]
    yield dg.AssetCheckResult(
        check_name="he_total_within_obfuscated_bounds", passed=not outside,
        metadata={"cells_outside_bounds": dg.MetadataValue.json(outside),
                  "sites_without_released_age_sex": dg.MetadataValue.json(missing)},
    )
