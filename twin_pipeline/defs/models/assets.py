"""`ml` layer: treatment-effect models logged to MLflow, treatment simulations, and evaluation."""


import subprocess
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from twin_pipeline.defs.gating import gate_results, gated_outputs, output_metadata
from twin_pipeline.defs.partitions import WAREHOUSE_POOL
from twin_pipeline.defs.twins.assets import TWIN_FRESHNESS
from twin_pipeline.lib import effects, simulate
from twin_pipeline.lib.effect_plots import estimator_figures
from twin_pipeline.lib.mlflow_tracking import (
    CHAMPION_ALIAS,
    alias_version,
    log_effect_model_run,
    register_and_gate,
    use_tracking_uri,
)
from twin_pipeline.lib.twin import MODEL_FEATURES
from twin_pipeline.quality import suites
from twin_pipeline.resources import DeidResource, GroundTruthResource, MlflowResource


class TreatmentModelConfig(dg.Config):
    seed: int = Field(default=7, description="Random seed for cross-fitting, bootstrap and simulation draws.")
    n_ensemble: int = Field(default=5, description="Bootstrap models in the simulation ensemble.")
    n_draws: int = Field(default=50, description="Outcome-noise draws per twin × therapy × model.")
    n_folds: int = Field(default=5, description="Cross-fitting folds for diagnostics and the DR estimates.")
    estimators: list[str] = Field(
        default=list(effects.ESTIMATORS),
        description="Estimators fitted and compared (one MLflow run each): t_learner, dr_learner, x_learner.",
    )


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parents[3],
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flat_metrics(diag: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in diag.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_metrics(v, name + "."))
        elif isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v):
            out[name] = float(v)
    return out


def _champion_metric(mlflow: MlflowResource, twin_version: str, cf, train: pd.DataFrame) -> dict:
    """The current champion's validation metric on this data version (see `champion_gate`)."""
    import mlflow as mlflow_lib

    champ = alias_version(mlflow.tracking_uri, mlflow.registered_model_name, CHAMPION_ALIAS)
    if champ is None:
        return {"champion_version": None, "champion_metric": None, "champion_metric_source": "no_champion"}
    out = {"champion_version": champ["version"]}
    if champ["run_tags"].get("twin_version") == twin_version and effects.VALIDATION_METRIC in champ["run_metrics"]:
        out["champion_metric"] = float(champ["run_metrics"][effects.VALIDATION_METRIC])
        out["champion_metric_source"] = "logged_same_twin_version"
        return out
    # Another data version: score the champion's predictions against this version's pseudo-effects. Rows it
    # was trained on are in-sample for it, so the comparison leans towards keeping the champion.
    with use_tracking_uri(mlflow.tracking_uri):
        loaded = mlflow_lib.pyfunc.load_model(champ["model_uri"])
        pred = loaded.predict(train[MODEL_FEATURES].reset_index(drop=True))
    outcomes = np.asarray(pred[list(effects.ARMS)], dtype=np.float64)
    out["champion_metric"] = effects.validation_metrics(outcomes, cf)[effects.VALIDATION_METRIC]
    out["champion_metric_source"] = "rescored_on_this_twin_version"
    return out


def _tags(context: dg.AssetExecutionContext, asset_key: str, twin_version: str, **extra) -> dict:
    return {
        "dagster.run_id": context.run.run_id,
        "dagster.asset_key": asset_key,
        "dagster.partition": context.partition_key if context.has_partition_key else "",
        "git.commit": git_commit(),
        "twin_version": twin_version,
        **extra,
    }


@dg.multi_asset(
    outs={
        "ml__treatment_effect_model": dg.AssetOut(
            key=["ml", "treatment_effect_model"],
            group_name="ml",
            description="One row per estimator × twin version: MLflow run id, model URI, cross-fitted diagnostics.",
            kinds={"mlflow", "scikit-learn", "duckdb"},
            freshness_policy=TWIN_FRESHNESS,
        ),
        "ml__treatment_simulation": dg.AssetOut(
            key=["ml", "treatment_simulation"],
            group_name="ml",
            description="One row per twin × therapy: simulated 90-day 6MWD (mean, p10, p90), P(best), recommendation.",
            kinds={"numpy", "duckdb"},
            freshness_policy=TWIN_FRESHNESS,
        ),
    },
    ins={"twins": dg.AssetIn(key=["twin", "patient_twin"])},
    check_specs=gated_outputs(["ml", "treatment_effect_model"], suites.ml_treatment_effect_model)
    + gated_outputs(["ml", "treatment_simulation"], suites.ml_treatment_simulation),
    pool=WAREHOUSE_POOL,
    can_subset=False,
)
def treatment_models(
    context: dg.AssetExecutionContext, config: TreatmentModelConfig, mlflow: MlflowResource, twins: pd.DataFrame
):
    """Fit the T-, DR- and X-learners on one cross-fitted yardstick, log one MLflow run each, and simulate
    every twin under every therapy with a bootstrap ensemble of the best estimator plus outcome noise."""
    train = twins[twins["therapy"].notna() & twins["outcome_6mwd_90d_m"].notna()].reset_index(drop=True)
    if len(train) < 40 or train["therapy"].nunique() < len(effects.ARMS):
        raise dg.Failure(
            f"too few twins with a therapy and an observed 90-day outcome to fit effects: {len(train)} rows, "
            f"{train['therapy'].nunique()} of {len(effects.ARMS)} arms present"
        )
    estimators = tuple(config.estimators)
    cf, results = effects.fit_estimators(
        train, MODEL_FEATURES, estimators=estimators, seed=config.seed, n_folds=config.n_folds
    )
    best = effects.best_estimator(results)
    twin_version = str(twins["twin_version"].iloc[0])
    champion = _champion_metric(mlflow, twin_version, cf, train)
    rows = []
    for name, res in results.items():
        metrics = _flat_metrics(res.diagnostics)
        info = log_effect_model_run(
            tracking_uri=mlflow.tracking_uri,
            experiment=mlflow.experiment_name,
            artifact_location=mlflow.artifact_location(),
            run_name=f"{name}/{twin_version[:8]}",
            model=res.model,
            params={
                "estimator": name,
                "n_folds": config.n_folds,
                "seed": config.seed,
                "n_features": len(MODEL_FEATURES),
                "arms": ",".join(effects.ARMS),
                "twin_version": twin_version,
                "validation_metric": effects.VALIDATION_METRIC,
            },
            metrics=metrics,
            tags=_tags(context, "ml/treatment_effect_model", twin_version, estimator=name,
                       best_estimator=str(name == best).lower()),
            input_example=train[MODEL_FEATURES],
            dataset_df=train[MODEL_FEATURES + ["therapy", "outcome_6mwd_90d_m"]],
            dataset_source=f"warehouse:twin.patient_twin@{twin_version}",
            figures=estimator_figures(res.model, res.oof_outcomes, cf, seed=config.seed),
        )
        rows.append({
            "estimator": name,
            "twin_version": twin_version,
            "mlflow_run_id": info["run_id"],
            "model_uri": info["model_uri"],
            "n_train": int(len(train)),
            "is_best": name == best,
            "validation_metric": effects.VALIDATION_METRIC,
            "champion_version": champion["champion_version"],
            "champion_metric": champion["champion_metric"],
            "champion_metric_source": champion["champion_metric_source"],
            **{k.replace(".", "_"): v for k, v in metrics.items()},
        })
    summary = pd.DataFrame(rows)
    meta = output_metadata(summary)
    meta["best_estimator"] = best
    meta["n_train"] = int(len(train))
    meta["n_outside_overlap"] = int(cf.outside.sum())
    meta["validation_metric"] = effects.VALIDATION_METRIC
    meta["validation_by_estimator"] = dg.MetadataValue.json(
        {r.name: round(r.diagnostics[effects.VALIDATION_METRIC], 3) for r in results.values()}
    )
    meta["mlflow_run_ids"] = dg.MetadataValue.json({r["estimator"]: r["mlflow_run_id"] for r in rows})
    meta["mlflow_run_id"] = next(r["mlflow_run_id"] for r in rows if r["is_best"])  # the best estimator's run
    yield dg.Output(summary, output_name="ml__treatment_effect_model", metadata=meta)
    yield from gate_results(["ml", "treatment_effect_model"], summary, suites.ml_treatment_effect_model)

    ensemble = effects.fit_ensemble(train, MODEL_FEATURES, n_models=config.n_ensemble, seed=config.seed,
                                    estimator=best)
    diag = results[best].diagnostics
    rmse = [v for k, v in diag.items() if k.startswith("oof_rmse_") and np.isfinite(v)]
    noise_sd = float(np.median(rmse)) if rmse else float(train["outcome_6mwd_90d_m"].std())
    X = twins[["site_id", "person_id"] + MODEL_FEATURES].reset_index(drop=True)
    sims = simulate.simulate_treatments(ensemble, X, noise_sd=noise_sd, n_draws=config.n_draws, seed=config.seed)
    n_sim = int(sims.attrs.get("n_simulations", 0))
    observed = pd.Categorical(twins["therapy"], categories=list(effects.ARMS)).codes
    outside = effects.overlap_flags(results[best].model.propensity(X), observed)
    sims["outside_overlap"] = np.repeat(outside, len(effects.ARMS))
    sims["estimator"] = best
    meta = output_metadata(sims)
    meta["n_simulations"] = n_sim
    meta["n_draws"] = config.n_draws
    meta["ensemble_size"] = config.n_ensemble
    meta["estimator"] = best
    meta["twins_outside_overlap"] = int(outside.sum())
    meta["recommended_counts"] = dg.MetadataValue.json(
        sims.loc[sims["recommended"], "therapy"].value_counts().to_dict()
    )
    sims.attrs = {}
    yield dg.Output(sims, output_name="ml__treatment_simulation", metadata=meta)
    yield from gate_results(["ml", "treatment_simulation"], sims, suites.ml_treatment_simulation)


CHAMPION_GATE = "champion_gate"


@dg.asset(
    key=["ml", "champion_model"],
    group_name="ml",
    kinds={"mlflow"},
    ins={"model_runs": dg.AssetIn(key=["ml", "treatment_effect_model"])},
    check_specs=[
        dg.AssetCheckSpec(
            CHAMPION_GATE,
            asset=dg.AssetKey(["ml", "champion_model"]),
            blocking=True,
            description=(
                "The best estimator of this twin version beats the registered champion on "
                f"`{effects.VALIDATION_METRIC}` (lower is better); warns when it was refused and kept as challenger, "
                "blocks when it has no finite validation metric."
            ),
        )
    ]
    + gated_outputs(["ml", "champion_model"], suites.ml_champion_model),
    pool=WAREHOUSE_POOL,
)
def champion_model(context: dg.AssetExecutionContext, mlflow: MlflowResource, model_runs: pd.DataFrame):
    """The registry decision for one twin version (one row): the best estimator registered as a new version,
    aliased `champion` only when it beats the current champion, else `challenger`."""
    best = model_runs[model_runs["is_best"].astype(bool)]
    if len(best) != 1:
        raise dg.Failure(f"expected exactly one best estimator in ml/treatment_effect_model, found {len(best)}")
    row = best.iloc[0]
    metric = str(row["validation_metric"])
    challenger = float(row[metric])
    champion = None if pd.isna(row["champion_metric"]) else float(row["champion_metric"])
    res = register_and_gate(
        tracking_uri=mlflow.tracking_uri,
        name=mlflow.registered_model_name,
        model_uri=str(row["model_uri"]),
        challenger_metric=challenger,
        champion_metric=champion,
        tags={"estimator": row["estimator"], "twin_version": row["twin_version"],
              "dagster.run_id": context.run.run_id},
    )
    out = pd.DataFrame([{
        "registered_model": mlflow.registered_model_name,
        "version": res["version"],
        "alias": res["alias"],
        "promoted": res["promoted"],
        "estimator": row["estimator"],
        "twin_version": row["twin_version"],
        "mlflow_run_id": row["mlflow_run_id"],
        "validation_metric": metric,
        "challenger_metric": challenger,
        "champion_metric": champion,
        "champion_metric_source": row["champion_metric_source"],
        "previous_champion_version": res["previous_champion_version"],
    }])
    meta = output_metadata(out)
    meta.update({"version": res["version"], "alias": res["alias"], "promoted": res["promoted"],
                 "estimator": str(row["estimator"])})
    yield dg.Output(out, metadata=meta)
    yield dg.AssetCheckResult(
        asset_key=dg.AssetKey(["ml", "champion_model"]),
        check_name=CHAMPION_GATE,
        passed=bool(res["promoted"]),
        # a refused challenger is a decision, not a broken pipeline: it warns (the nightly refresh and a re-run of
        # `make demo` on unchanged twins must not fail); a challenger with no finite metric is an error
        severity=dg.AssetCheckSeverity.WARN if np.isfinite(challenger) else dg.AssetCheckSeverity.ERROR,
        description=(
            f"version {res['version']} promoted to champion" if res["promoted"]
            else f"version {res['version']} refused (kept as challenger): the champion is at least as good"
        ),
        metadata={
            "validation_metric": metric,
            "challenger_metric": challenger,
            "champion_metric": champion if champion is not None else "none",
            "champion_metric_source": str(row["champion_metric_source"]),
            "previous_champion_version": res["previous_champion_version"] or 0,
        },
    )
    yield from gate_results(["ml", "champion_model"], out, suites.ml_champion_model)


class LoadedModel:
    """An MLflow pyfunc effect model seen through the `effects.OutcomeModel` protocol."""

    arms = effects.ARMS
    reference_arm = effects.REFERENCE_ARM

    def __init__(self, pyfunc):
        self._pyfunc = pyfunc

    def predict_outcomes(self, X: pd.DataFrame) -> np.ndarray:
        out = self._pyfunc.predict(X[MODEL_FEATURES])
        return np.asarray(out[list(self.arms)] if hasattr(out, "columns") else out, dtype=np.float64)


@dg.asset(
    key=["ml", "effect_evaluation"],
    group_name="ml",
    kinds={"mlflow", "duckdb"},
    ins={
        "twins": dg.AssetIn(key=["twin", "patient_twin"]),
        "model_runs": dg.AssetIn(key=["ml", "treatment_effect_model"]),
    },
    check_specs=gated_outputs(["ml", "effect_evaluation"], suites.ml_effect_evaluation),
    pool=WAREHOUSE_POOL,
)
def effect_evaluation(
    context: dg.AssetExecutionContext,
    twins: pd.DataFrame,
    model_runs: pd.DataFrame,
    ground_truth: GroundTruthResource,
    deid: DeidResource,
    mlflow: MlflowResource,
):
    """Per estimator: PEHE per contrast, ATE error, policy value vs oracle and observed, effect calibration
    against the generator's truth (the only asset reading it), model loaded back from MLflow; without
    truth, the estimable part (DR policy value, DR calibration, overlap) from the cross-fitted runs."""
    import mlflow as mlflow_lib

    from twin_pipeline.lib.deid import pseudonym

    frames = []
    key = deid.key() if ground_truth.site_dirs() else None
    for site_dir in ground_truth.site_dirs():
        path = site_dir / "patients.csv"
        if not path.exists():
            continue
        gt = pd.read_csv(path, dtype={"patient_id": str})
        gt["person_id"] = [pseudonym(key, site_dir.name, pid, "person") for pid in gt["patient_id"]]
        gt["site_id"] = site_dir.name
        frames.append(gt.drop(columns=["patient_id"]))
    y_cols = [f"y_{a}" for a in effects.ARMS]
    joined = pd.DataFrame()
    if frames:
        truth = pd.concat(frames, ignore_index=True)
        joined = twins.merge(truth, on=["site_id", "person_id"], how="inner", suffixes=("", "_truth"))
        joined = joined[joined["therapy"].notna()].dropna(subset=y_cols)
    has_truth = len(joined) > 0
    estimable = ["dr_policy_value_model", "dr_policy_value_observed", "dr_policy_gain", "frac_outside_overlap",
                 effects.VALIDATION_METRIC] + [c for c in model_runs.columns if c.startswith("val_calibration_slope_")]
    rows = []
    for run in model_runs.itertuples():
        rec = {"estimator": run.estimator, "mlflow_run_id": run.mlflow_run_id, "has_ground_truth": has_truth,
               "n_eval": int(len(joined)), **{c: float(getattr(run, c)) for c in estimable if hasattr(run, c)}}
        if has_truth:
            with use_tracking_uri(mlflow.tracking_uri):
                loaded = LoadedModel(mlflow_lib.pyfunc.load_model(run.model_uri))
            res = _flat_metrics(effects.evaluate_against_truth(
                loaded, joined[MODEL_FEATURES + ["therapy"]], joined[y_cols].to_numpy()))
            rec.update({f"truth_{k}": v for k, v in res.items()})
            with use_tracking_uri(mlflow.tracking_uri), mlflow_lib.start_run(run_id=run.mlflow_run_id):
                mlflow_lib.log_metrics({f"truth.{k}": v for k, v in res.items()})
        rows.append(rec)
    out = pd.DataFrame(rows)
    meta = output_metadata(out)
    meta["has_ground_truth"] = has_truth
    meta["n_eval"] = int(len(joined))
    for c in out.columns:
        if c.startswith("truth_pehe") or c in ("truth_regret", "dr_policy_value_model"):
            meta[c] = dg.MetadataValue.json({e: round(float(v), 3) for e, v in zip(out["estimator"], out[c])})
    yield dg.Output(out, metadata=meta)
    yield from gate_results(["ml", "effect_evaluation"], out, suites.ml_effect_evaluation)
