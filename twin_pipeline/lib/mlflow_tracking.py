"""MLflow 3 logging for treatment-effect models: run, params, metrics, dataset, pyfunc model, registry.

Plain MLflow client code (no dagster). Privacy: only aggregates and the model leave this function. The
training dataset is logged as an MLflow dataset reference (source, digest, schema, row count — MLflow
stores no rows) restricted to the model's feature, treatment and outcome columns, so pseudonyms and
site-local ids never reach the tracking store; the input example is a synthetic row of column medians.

The logged model is an ``mlflow.pyfunc`` model (``EffectModelPyfunc``) whose ``predict`` returns the
per-arm predicted outcome matrix (metres) as a DataFrame with one column per arm. Loading it needs the
``twin_pipeline`` package importable (the pickled ``EffectModel`` refers to it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import cloudpickle
import mlflow
import mlflow.data
import numpy as np
import pandas as pd
import sklearn
from mlflow.data.dataset_source import DatasetSource
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ColSpec, Schema

from twin_pipeline.lib.effects import DEFAULT_CATE_PARAMS, EffectModel, feature_matrix

MODEL_NAME = "effect_model"
MODEL_ARTIFACT_KEY = "effect_model"
#: Column names that identify a person or a site-local record; never logged, never a feature.
IDENTIFIER_COLUMNS = frozenset({"person_id", "site_id", "person_key", "patient_id", "mrn", "record_id"})
MIN_ROWS_FOR_EXAMPLE = 10
MAX_PARAM_LENGTH = 6000


class WarehouseDatasetSource(DatasetSource):
    """Dataset source for a warehouse table URI MLflow has no resolver for (e.g. ``duckdb:///...#twin.x``)."""

    def __init__(self, uri: str):
        self._uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "twin_pipeline_warehouse"

    def load(self, **kwargs: Any) -> Any:
        """Not loadable through MLflow: read the table through the pipeline's warehouse resource."""
        raise NotImplementedError("read warehouse tables through twin_pipeline's warehouse resource")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> "WarehouseDatasetSource":
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self._uri}

    @classmethod
    def from_dict(cls, source_dict: dict[str, Any]) -> "WarehouseDatasetSource":
        return cls(source_dict["uri"])


class EffectModelPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict`` returns one column per arm with the predicted 90-day outcome (metres)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Unpickle the ``EffectModel`` stored as the ``effect_model`` artifact."""
        with open(context.artifacts[MODEL_ARTIFACT_KEY], "rb") as fh:
            self.model: EffectModel = pickle.load(fh)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Per-arm outcome predictions for ``model_input`` (features by name; NaN allowed)."""
        X = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        out = self.model.predict_outcomes(X)
        return pd.DataFrame(out, columns=list(self.model.arms), index=X.index)


def median_input_example(df: pd.DataFrame, feature_cols: list[str]) -> pd.DataFrame:
    """One synthetic row: the median of each feature over ``df`` (0.0 where a column is all NaN).

    Not a patient's row. Raises ``ValueError`` when ``df`` has fewer than ``MIN_ROWS_FOR_EXAMPLE`` rows, where
    a median could be one patient's value.
    """
    if len(df) < MIN_ROWS_FOR_EXAMPLE:
        raise ValueError(f"need at least {MIN_ROWS_FOR_EXAMPLE} rows to build a median input example")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: median NaN, replaced by 0 below
        med = np.nanmedian(feature_matrix(df, feature_cols), axis=0) if len(feature_cols) else np.array([])
    med = np.where(np.isfinite(med), med, 0.0)
    return pd.DataFrame([med], columns=list(feature_cols), dtype=np.float64)


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested dicts with ``_`` and check every value is a number (bools count as 0/1).

    Raises ``TypeError`` naming the key of a non-numeric value.
    """
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}_{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten_metrics(v, key))
        elif isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
            out[key] = float(v)
        else:
            raise TypeError(f"metric {key!r} is not numeric ({type(v).__name__})")
    return out


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts with ``.``; values become strings (lists joined by ``,``), cut at 6000 chars."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten_params(v, key))
            continue
        s = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
        out[key] = s if len(s) <= MAX_PARAM_LENGTH else s[: MAX_PARAM_LENGTH - 3] + "..."
    return out


def model_params(model: EffectModel) -> dict[str, Any]:
    """Parameters describing a fitted ``EffectModel`` (hyper-parameters, arms, features; no data)."""
    md = model.metadata
    return {
        "model_kind": getattr(model, "kind", "t_learner"),
        "estimator": getattr(model, "kind", "t_learner"),
        "arms": list(model.arms),
        "reference_arm": model.reference_arm,
        "treatment_col": model.treatment_col,
        "outcome_col": model.outcome_col,
        "feature_cols": list(model.feature_cols),
        "n_features": len(model.feature_cols),
        "outcome_model": md.get("outcome_model"),
        "outcome_params": md.get("outcome_params", {}),
        "cate_model": md.get("cate_model"),
        # same keys for every estimator so runs line up in MLflow's compare view
        "cate_params": md.get("cate_params") or {k: "n/a" for k in DEFAULT_CATE_PARAMS},
        "validation_metric": md.get("validation_metric"),
        "propensity_model": md.get("propensity_model"),
        "propensity_c": md.get("propensity_c"),
        "seed": md.get("seed"),
        "n_folds": md.get("n_folds"),
        "overlap_rule": md.get("overlap_rule"),
    }


def _dataset_source(source: str) -> DatasetSource:
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return resolve_dataset_source(source)
        except MlflowException:
            return WarehouseDatasetSource(source)


def _signature(model: EffectModel) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec("double", c) for c in model.feature_cols]),
        outputs=Schema([ColSpec("double", a) for a in model.arms]),
    )


@contextlib.contextmanager
def use_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Point the fluent API (tracking + registry) at ``tracking_uri`` and restore the caller's setup after.

    Also quietens MLflow/alembic logging, MLflow warnings, registry messages and artifact progress bars,
    and turns off uv-project auto-detection, for the duration.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env_keys = (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
        "MLFLOW_UV_AUTO_DETECT",
    )
    prev_env = {k: os.environ.get(k) for k in env_keys}
    prev_tracking = getattr(tracking_utils, "_tracking_uri", None)
    prev_registry = getattr(registry_utils, "_registry_uri", None)
    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        # Requirements are pinned explicitly below; do not copy whichever uv project the cwd is in.
        os.environ["MLFLOW_UV_AUTO_DETECT"] = "false"
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            # MLflow prints registry progress ("Successfully registered model ...") to stderr.
            warnings.filterwarnings("ignore", module=r"mlflow(\..*)?")
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        mlflow.set_tracking_uri(prev_tracking)
        mlflow.set_registry_uri(prev_registry)
        for k, v in prev_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            raise ValueError(f"MLflow experiment {name!r} is deleted; restore it or pick another name")
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def log_effect_model_run(
    *,
    tracking_uri: str,
    experiment: str,
    run_name: str,
    model: EffectModel,
    params: dict[str, Any],
    metrics: dict[str, Any],
    tags: dict[str, Any],
    input_example: pd.DataFrame,
    dataset_df: pd.DataFrame | None,
    dataset_source: str,
    registered_model_name: str | None = None,
    registered_model_alias: str | None = None,
    artifact_location: str | None = None,
    figures: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Log one fitted effect model as an MLflow run and return where it went.

    * experiment ``experiment`` is created when missing (``artifact_location`` used only then);
    * params: ``model_params(model)`` overlaid with ``params``, flattened to strings;
    * metrics: ``metrics`` flattened, numbers only (``TypeError`` otherwise), linked to the logged model;
    * tags: ``tags`` as strings (callers pass dagster run id, asset key, partition, git commit);
    * dataset: ``dataset_df`` restricted to feature + treatment + outcome columns, logged with
      ``mlflow.log_input`` (context ``training``) from ``source=dataset_source`` with its digest;
    * model: ``EffectModelPyfunc`` under name ``effect_model`` with an explicit signature (features →
      one double column per arm) and a median input example built from ``input_example``; registered as
      ``registered_model_name`` when given, and the alias set when ``registered_model_alias`` is given;
    * figures: each matplotlib figure of ``figures`` as ``plots/<name>.png`` (closed after logging).

    Returns ``{"run_id", "model_uri", "model_id", "experiment_id", "registered_version"}`` (the last is
    None when not registered).
    """
    ids = sorted(IDENTIFIER_COLUMNS.intersection(c.lower() for c in model.feature_cols))
    if ids:
        raise ValueError(f"identifier columns must not be model features: {ids}")
    flat_metrics = flatten_metrics(metrics)
    flat_params = flatten_params({**model_params(model), **params})
    str_tags = {str(k): str(v) for k, v in tags.items()}
    example = median_input_example(input_example, model.feature_cols)
    logged_cols = list(model.feature_cols) + [model.treatment_col, model.outcome_col]

    with use_tracking_uri(tracking_uri), tempfile.TemporaryDirectory(prefix="effect_model_") as tmp:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        experiment_id = _experiment_id(client, experiment, artifact_location)
        model_path = Path(tmp) / "effect_model.pkl"
        with open(model_path, "wb") as fh:
            pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=str_tags) as run:
            mlflow.log_params(flat_params)
            for fig_name, fig in (figures or {}).items():
                mlflow.log_figure(fig, f"plots/{fig_name}.png")
                import matplotlib.pyplot as plt

                plt.close(fig)
            dataset = None
            if dataset_df is not None:
                missing = [c for c in logged_cols if c not in dataset_df.columns]
                if missing:
                    raise KeyError(f"dataset frame lacks columns {missing}")
                dataset = mlflow.data.from_pandas(
                    dataset_df.loc[:, logged_cols].reset_index(drop=True),
                    source=_dataset_source(dataset_source),
                    targets=model.outcome_col,
                    name=f"{experiment}_training",
                )
                mlflow.log_input(dataset, context="training")
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=EffectModelPyfunc(),
                artifacts={MODEL_ARTIFACT_KEY: str(model_path)},
                signature=_signature(model),
                input_example=example,
                pip_requirements=[
                    f"mlflow=={mlflow.__version__}",
                    f"scikit-learn=={sklearn.__version__}",
                    f"pandas=={pd.__version__}",
                    f"numpy=={np.__version__}",
                    f"cloudpickle=={cloudpickle.__version__}",
                ],
                registered_model_name=registered_model_name,
                metadata={"arms": list(model.arms), "reference_arm": model.reference_arm},
            )
            finite = {k: v for k, v in flat_metrics.items() if math.isfinite(v)}
            if finite:
                mlflow.log_metrics(finite, model_id=info.model_id, dataset=dataset)
            nonfinite = sorted(set(flat_metrics) - set(finite))
            if nonfinite:
                mlflow.set_tag("twin_pipeline.nonfinite_metrics", ",".join(nonfinite)[:MAX_PARAM_LENGTH])
        version = info.registered_model_version
        if registered_model_name and registered_model_alias and version is not None:
            client.set_registered_model_alias(registered_model_name, registered_model_alias, str(version))
    return {
        "run_id": run.info.run_id,
        "model_uri": info.model_uri,
        "model_id": info.model_id,
        "experiment_id": experiment_id,
        "registered_version": int(version) if version is not None else None,
    }


CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"


def champion_decision(challenger_metric: float, champion_metric: float | None, *, min_improvement: float = 0.0) -> bool:
    """True when the challenger should become champion on a lower-is-better validation metric.

    No champion (``None`` or NaN) → True. Otherwise the challenger must be strictly better by more than
    ``min_improvement`` (same units as the metric); a tie keeps the current champion. A non-finite
    challenger metric never wins.
    """
    if not math.isfinite(challenger_metric):
        return False
    if champion_metric is None or not math.isfinite(champion_metric):
        return True
    return challenger_metric < champion_metric - min_improvement


def alias_version(tracking_uri: str, name: str, alias: str = CHAMPION_ALIAS) -> dict[str, Any] | None:
    """The registered version holding ``alias``: ``{"version", "run_id", "model_uri", "tags", "run_metrics",
    "run_tags"}``, or None when the model or the alias does not exist."""
    with use_tracking_uri(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None
        run = client.get_run(mv.run_id) if mv.run_id else None
        return {
            "version": int(mv.version),
            "run_id": mv.run_id,
            "model_uri": f"models:/{name}@{alias}",
            "tags": dict(mv.tags or {}),
            "run_metrics": dict(run.data.metrics) if run else {},
            "run_tags": dict(run.data.tags) if run else {},
        }


def register_and_gate(
    *,
    tracking_uri: str,
    name: str,
    model_uri: str,
    challenger_metric: float,
    champion_metric: float | None,
    tags: dict[str, Any] | None = None,
    min_improvement: float = 0.0,
) -> dict[str, Any]:
    """Register ``model_uri`` as a new version of ``name`` and give it ``champion`` only if it wins.

    The decision is ``champion_decision(challenger_metric, champion_metric)``; the new version gets alias
    ``champion`` when promoted (the previous champion keeps its version, loses the alias) and ``challenger``
    otherwise. Version tags: ``tags`` plus the decision. Returns ``{"version", "promoted", "alias",
    "previous_champion_version"}``.
    """
    previous = alias_version(tracking_uri, name, CHAMPION_ALIAS)
    promoted = champion_decision(challenger_metric, champion_metric, min_improvement=min_improvement)
    alias = CHAMPION_ALIAS if promoted else CHALLENGER_ALIAS
    with use_tracking_uri(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        mv = mlflow.register_model(model_uri, name)
        version = str(mv.version)
        for k, v in {**(tags or {}), "gate.decision": "promoted" if promoted else "refused",
                     "gate.challenger_metric": challenger_metric,
                     "gate.champion_metric": "none" if champion_metric is None else champion_metric}.items():
            client.set_model_version_tag(name, version, str(k), str(v))
        client.set_registered_model_alias(name, alias, version)
    return {
        "version": int(version),
        "promoted": promoted,
        "alias": alias,
        "previous_champion_version": previous["version"] if previous else None,
    }
