"""Dagster side of the quality gates: GX 1.x suites as blocking asset checks.

Two ways to gate an asset with a suite from :mod:`twin_pipeline.quality.suites`:

1. Inside the asset (``@dg.asset(check_specs=[gate_check_spec(...)])`` or a multi-asset): the body
   yields ``dg.Output(df)`` and then ``gate_check_result(key, df, suite)``. A failed ERROR result
   makes Dagster fail the step after it ends (``DagsterAssetCheckFailedError``), so every
   downstream step in the run is not executed. The output *has already been written* by the IO
   manager at that point. Where a failing frame must never reach the warehouse (PHI-absence gates
   on ``deid.*``), yield from :func:`gated_output` instead: it evaluates the gate first and raises
   ``dg.Failure`` before the output is handed to the IO manager.
2. A standalone check, :func:`build_gx_asset_check`, that loads the stored asset value through its
   IO manager and validates it (partition-aware when given a ``partitions_def``).

Check metadata and descriptions carry aggregates only (counts, failed expectation names).
"""

import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from twin_pipeline.quality.expectations import GateResult, validate_frame

__all__ = [
    "build_gx_asset_check",
    "gate_check_name",
    "gate_check_result",
    "gate_check_spec",
    "gate_metadata",
    "gated_output",
]

CoercibleAsset = dg.AssetKey | str | Sequence[str] | dg.AssetsDefinition


def gate_check_name(suite_name: str) -> str:
    """Check name for a suite: ``"deid.patients"`` -> ``"gx_deid_patients"`` (Dagster-safe)."""
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", suite_name).strip("_").lower()
    if not slug:
        raise ValueError(f"suite name {suite_name!r} gives an empty check name")
    return f"gx_{slug}"


def _asset_key(asset: CoercibleAsset) -> dg.AssetKey:
    if isinstance(asset, dg.AssetsDefinition):
        return asset.key
    return dg.AssetKey.from_coercible(asset)


def gate_check_spec(
    asset_key: CoercibleAsset,
    suite_name: str,
    *,
    blocking: bool = True,
    description: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> dg.AssetCheckSpec:
    """Declare the GX gate of one asset, for ``check_specs=`` of ``@dg.asset``/``@dg.multi_asset``.

    Args:
        asset_key: the guarded asset (key, string, path list or definition).
        suite_name: the suite's name; the check is named :func:`gate_check_name` of it, which is
            also the name :func:`gate_check_result` uses.
        blocking: a failed ERROR result stops downstream assets in the same run.
        description: shown in the UI; defaults to naming the suite.
        partitions_def: pass the asset's partitions definition to record each evaluation against
            the run's partition (Dagster preview feature); without it the evaluation is
            recorded for the asset as a whole.
    """
    with warnings.catch_warnings():
        # partition-scoped check specs are a Dagster 1.13 preview feature; chosen knowingly
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name=gate_check_name(suite_name),
            asset=_asset_key(asset_key),
            blocking=blocking,
            description=description or f"Great Expectations suite '{suite_name}' (blocking gate).",
            partitions_def=partitions_def,
        )


def gate_metadata(result: GateResult) -> dict[str, Any]:
    """Dagster metadata for a gate outcome: aggregates and expectation names only."""
    return {
        "suite": dg.MetadataValue.text(result.suite_name),
        "success": dg.MetadataValue.bool(result.success),
        "evaluated_expectations": dg.MetadataValue.int(result.evaluated),
        "failed_expectations": dg.MetadataValue.int(result.failed),
        "errored_expectations": dg.MetadataValue.int(result.errored),
        "failed_expectation_names": dg.MetadataValue.text("\n".join(result.failed_expectations)),
        "unexpected_row_counts": dg.MetadataValue.json(dict(result.unexpected_counts)),
        "row_count": dg.MetadataValue.int(result.row_count),
    }


def _describe(result: GateResult) -> str:
    if result.success:
        return f"{result.suite_name}: all {result.evaluated} expectations passed."
    return (
        f"{result.suite_name}: {result.failed} of {result.evaluated} expectations failed: "
        + ", ".join(result.failed_expectations)
    )


def _require_frame(asset_key: dg.AssetKey, df: object) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"GX gate on asset {asset_key.to_user_string()}: expected a pandas DataFrame, "
            f"got {type(df).__name__}"
        )
    return df


def gate_check_result(
    asset_key: CoercibleAsset,
    df: pd.DataFrame,
    suite,
    *,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetCheckResult:
    """Validate ``df`` with ``suite`` and return the check result for :func:`gate_check_spec`.

    Args:
        asset_key: the guarded asset.
        df: the asset's frame (the value being materialized).
        suite: a ``gx.ExpectationSuite`` (its name picks the check name).
        severity: ERROR blocks downstream when the spec is blocking; WARN only reports.
    """
    key = _asset_key(asset_key)
    result = validate_frame(_require_frame(key, df), suite)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=gate_check_name(suite.name),
        passed=result.success,
        severity=severity,
        metadata=gate_metadata(result),
        description=_describe(result),
    )


def gated_output(
    asset_key: CoercibleAsset,
    df: pd.DataFrame,
    suite,
    *,
    output_name: str = "result",
    metadata: Mapping[str, Any] | None = None,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> Iterator[dg.AssetCheckResult | dg.Output]:
    """Yield the gate result, then the output only if the gate did not fail with ERROR.

    Use as ``yield from gated_output(key, df, suite)`` inside an asset whose ``check_specs``
    include ``gate_check_spec(key, suite.name)``. On an ERROR failure the check evaluation is
    recorded and ``dg.Failure`` is raised *before* the frame reaches the IO manager, so nothing
    is written and every downstream step is not executed.

    Args:
        output_name: the asset's output name (``"result"`` for ``@dg.asset``; the ``AssetOut``
            name in a multi-asset).
        metadata: output metadata (aggregates, e.g. ``dagster/row_count``).
    """
    check = gate_check_result(asset_key, df, suite, severity=severity)
    yield check
    if not check.passed and severity == dg.AssetCheckSeverity.ERROR:
        raise dg.Failure(
            description=f"Blocking quality gate failed for {_asset_key(asset_key).to_user_string()}"
            f" (output not stored). {check.description}",
            metadata=dict(check.metadata),
        )
    yield dg.Output(df, output_name=output_name, metadata=dict(metadata or {}))


def build_gx_asset_check(
    asset_key: CoercibleAsset,
    suite_fn: Callable[[], Any],
    *,
    name: str | None = None,
    blocking: bool = True,
    partitions_def: dg.PartitionsDefinition | None = None,
    description: str | None = None,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> dg.AssetChecksDefinition:
    """A standalone ``@dg.asset_check`` that loads the asset's stored frame and validates it.

    The frame is loaded through the asset's IO manager (for the DuckDB IO manager: the run's
    partition of the table when the check is partitioned). ``suite_fn`` is called at run time,
    so defining the check does not import Great Expectations.

    Args:
        asset_key: the guarded asset; if an ``AssetsDefinition`` is given and ``partitions_def``
            is None, the asset's own partitions definition is used.
        suite_fn: zero-argument function returning the ``gx.ExpectationSuite``.
        name: check name; default :func:`gate_check_name` of ``suite_fn.suite_name`` if set
            (as by ``quality.suites``), else of ``suite_fn.__name__`` (so it matches the name
            an in-asset :func:`gate_check_spec` for the same suite would use).
        blocking: a failed ERROR result stops downstream assets in the same run.
        partitions_def: the asset's partitions definition, making the check partition-aware
            (Dagster preview feature in 1.13; must equal the asset's).
        description: shown in the UI.
        severity: ERROR (blocking) or WARN.
    """
    key = _asset_key(asset_key)
    if partitions_def is None and isinstance(asset_key, dg.AssetsDefinition):
        partitions_def = asset_key.partitions_def
    suite_name = getattr(suite_fn, "suite_name", None) or getattr(suite_fn, "__name__", "")
    check_name = name or (
        gate_check_name(suite_name) if suite_name and suite_name != "<lambda>" else "gx_gate"
    )

    def _gx_check(asset_value: pd.DataFrame) -> dg.AssetCheckResult:
        suite = suite_fn()
        result = validate_frame(_require_frame(key, asset_value), suite)
        return dg.AssetCheckResult(
            passed=result.success,
            severity=severity,
            metadata=gate_metadata(result),
            description=_describe(result),
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks: 1.13 preview
        return dg.asset_check(
            asset=key,
            name=check_name,
            blocking=blocking,
            description=description or f"Great Expectations gate on {key.to_user_string()}.",
            partitions_def=partitions_def,
        )(_gx_check)
