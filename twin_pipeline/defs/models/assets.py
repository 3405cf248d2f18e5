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
from twin_pipeline.lib.mlflow_tracking import log_effect_model_run
from twin_pipeline.lib.twin import MODEL_FEATURES
from twin_pipeline.quality import suites
from twin_pipeline.resources import DeidResource, GroundTruthResource, MlflowResource


class TreatmentModelConfig(dg.Config):
    seed: int = Field(default=7, description="Random seed for cross-fitting, bootstrap and simulation draws.")
    n_ensemble: int = Field(default=5, description="Bootstrap models in the simulation ensemble.")
    n_draws: int = Field(default=50, description="Outcome-noise draws per twin × therapy × model.")
    n_folds: int = Field(default=5, description="Cross-fitting folds for diagnostics and the DR estimates.")


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


@dg.multi_asset(
    outs={
        "ml__treatment_effect_model": dg.AssetOut(
            key=["ml", "treatment_effect_model"],
            group_name="ml",
            description="One row per fitted estimator run: MLflow run id, model URI and aggregate diagnostics.",
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
    """Fit a T-learner (propensity + per-arm outcome models, cross-fitted diagnostics), log it to MLflow,
    and simulate every twin under every therapy with a bootstrap ensemble plus outcome noise."""
    train = twins[twins["therapy"].notna() & twins["outcome_6mwd_90d_m"].notna()]
    if len(train) < 40 or train["therapy"].nunique() < len(effects.ARMS):
        raise dg.Failure(
            f"too few twins with a therapy and an observed 90-day outcome to fit effects: {len(train)} rows, "
            f"{train['therapy'].nunique()} of {len(effects.ARMS)} arms present"
        )
    model, diag = effects.fit_t_learner(train, MODEL_FEATURES, seed=config.seed, n_folds=config.n_folds)
    metrics = _flat_metrics(diag)
    twin_version = str(twins["twin_version"].iloc[0])
    info = log_effect_model_run(
        tracking_uri=mlflow.tracking_uri,
        experiment=mlflow.experiment_name,
        artifact_location=mlflow.artifact_location(),
        run_name=f"t_learner/{twin_version[:8]}",
        model=model,
        params={
            "estimator": "t_learner",
            "outcome_model": "HistGradientBoostingRegressor",
            "propensity_model": "LogisticRegression(multinomial)",
            "n_folds": config.n_folds,
            "seed": config.seed,
            "n_features": len(MODEL_FEATURES),
            "arms": ",".join(effects.ARMS),
            "twin_version": twin_version,
        },
        metrics=metrics,
        tags={
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": "ml/treatment_effect_model",
            "dagster.partition": "",
            "git.commit": git_commit(),
            "twin_version": twin_version,
        },
        input_example=train[MODEL_FEATURES],
        dataset_df=train[MODEL_FEATURES + ["therapy", "outcome_6mwd_90d_m"]],
        dataset_source=f"warehouse:twin.patient_twin@{twin_version}",
        registered_model_name=mlflow.registered_model_name,
    )
    summary = pd.DataFrame(
        [
            {
                "estimator": "t_learner",
                "twin_version": twin_version,
                "mlflow_run_id": info["run_id"],
                "model_uri": info["model_uri"],
                "registered_version": str(info.get("registered_version") or ""),
                "n_train": int(len(train)),
                **{k.replace(".", "_"): v for k, v in metrics.items()},
            }
        ]
    )
    meta = output_metadata(summary)
    meta["mlflow_run_id"] = info["run_id"]
    meta["n_train"] = int(len(train))
    for k in sorted(metrics)[:20]:
        meta[k] = metrics[k]
    yield dg.Output(summary, output_name="ml__treatment_effect_model", metadata=meta)
    yield from gate_results(["ml", "treatment_effect_model"], summary, suites.ml_treatment_effect_model)

    ensemble = simulate.fit_ensemble(train, MODEL_FEATURES, n_models=config.n_ensemble, seed=config.seed)
    rmse = [v for k, v in metrics.items() if "rmse" in k.lower()]
    noise_sd = float(np.median(rmse)) if rmse else float(train["outcome_6mwd_90d_m"].std())
    X = twins[["site_id", "person_id"] + MODEL_FEATURES].reset_index(drop=True)
    sims = simulate.simulate_treatments(ensemble, X, noise_sd=noise_sd, n_draws=config.n_draws, seed=config.seed)
    n_sim = int(sims.attrs.get("n_simulations", 0))
    sims = sims.merge(X[["person_id", "site_id"]].drop_duplicates("person_id"), on="person_id", how="left") if (
        "site_id" not in sims.columns
    ) else sims
    meta = output_metadata(sims)
    meta["n_simulations"] = n_sim
    meta["n_draws"] = config.n_draws
    meta["ensemble_size"] = config.n_ensemble
    meta["recommended_counts"] = dg.MetadataValue.json(
        sims.loc[sims["recommended"], "therapy"].value_counts().to_dict()
    )
    sims.attrs = {}
    yield dg.Output(sims, output_name="ml__treatment_simulation", metadata=meta)
    yield from gate_results(["ml", "treatment_simulation"], sims, suites.ml_treatment_simulation)


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
    """Evaluation against the generator's ground truth (the only asset that reads it): PEHE, ATE error
    and policy value per estimator, computed with the model loaded back from MLflow."""
    import mlflow as mlflow_lib

    from twin_pipeline.lib.deid import pseudonym

    frames = []
    key = deid.key()
    for site_dir in ground_truth.site_dirs():
        path = site_dir / "patients.csv"
        if not path.exists():
            continue
        gt = pd.read_csv(path, dtype={"patient_id": str})
        gt["person_id"] = [pseudonym(key, site_dir.name, pid, "person") for pid in gt["patient_id"]]
        gt["site_id"] = site_dir.name
        frames.append(gt.drop(columns=["patient_id"]))
    if not frames:
        raise dg.Failure(f"no ground truth under {ground_truth.root}: evaluation needs the generator's truth files")
    truth = pd.concat(frames, ignore_index=True)
    joined = twins.merge(truth, on=["site_id", "person_id"], how="inner", suffixes=("", "_truth"))
    joined = joined[joined["therapy"].notna()]
    y_cols = [f"y_{a}" for a in effects.ARMS]
    joined = joined.dropna(subset=y_cols)
    mlflow_lib.set_tracking_uri(mlflow.tracking_uri)
    rows = []
    for run in model_runs.itertuples():
        loaded = LoadedModel(mlflow_lib.pyfunc.load_model(run.model_uri))
        res = effects.evaluate_against_truth(loaded, joined[MODEL_FEATURES + ["therapy"]], joined[y_cols].to_numpy())
        rows.append({"estimator": run.estimator, "mlflow_run_id": run.mlflow_run_id, "n_eval": len(joined),
                     **_flat_metrics(res)})
        with mlflow_lib.start_run(run_id=run.mlflow_run_id):
            mlflow_lib.log_metrics({f"truth.{k}": v for k, v in _flat_metrics(res).items()})
    out = pd.DataFrame(rows)
    out.columns = [c.replace(".", "_") for c in out.columns]
    meta = output_metadata(out)
    for c in out.columns:
        if c not in ("estimator", "mlflow_run_id") and pd.api.types.is_numeric_dtype(out[c]):
            meta[c] = float(out[c].iloc[0])
    yield dg.Output(out, metadata=meta)
    yield from gate_results(["ml", "effect_evaluation"], out, suites.ml_effect_evaluation)
